// A stand-in for NetMQ.dll, holding only the members docs/clients/unity/PosecastSubscriber.cs uses,
// with NetMQ 4's names and signatures (github.com/zeromq/netmq: SubscriberSocket, NetMQSocket,
// SocketOptions, ReceivingSocketExtensions, NetMQConfig). Beneath them is libzmq, called through
// P/Invoke, so that the example receives from a real publisher (tests/test_unity_client.py): the
// same ZeroMQ wire protocol NetMQ speaks. The test maps "libzmq" to a library file (NetMQ.dll.config).
// Add nothing the example does not use: the compile is what checks its calls.

using System;
using System.Runtime.InteropServices;
using System.Text;

namespace NetMQ
{
    // NetMQ's receiving side; its own members (TryReceive with a Msg) are not used by the example.
    public interface IReceivingSocket
    {
    }

    public abstract class NetMQSocket : IReceivingSocket, IDisposable
    {
        internal IntPtr Handle;

        internal NetMQSocket(int type)
        {
            Handle = Zmq.zmq_socket(NetMQConfig.Context, type);
            if (Handle == IntPtr.Zero)
                throw Zmq.Error("zmq_socket");
            Options = new SocketOptions(this);
        }

        public SocketOptions Options { get; }

        public void Connect(string address)
        {
            if (Zmq.zmq_connect(Handle, address) != 0)
                throw Zmq.Error($"cannot connect to '{address}'");
        }

        public void Dispose()
        {
            if (Handle != IntPtr.Zero)
                Zmq.zmq_close(Handle);
            Handle = IntPtr.Zero;
        }

        internal void SetOption(int option, int value)
        {
            if (Zmq.zmq_setsockopt(Handle, option, ref value, (UIntPtr)sizeof(int)) != 0)
                throw Zmq.Error("zmq_setsockopt");
        }

        internal void SetOption(int option, byte[] value)
        {
            if (Zmq.zmq_setsockopt(Handle, option, value, (UIntPtr)value.Length) != 0)
                throw Zmq.Error("zmq_setsockopt");
        }

        // One frame, or false when none came within `timeout` (negative: wait for it).
        internal bool TryReceiveFrame(TimeSpan timeout, out byte[] data, out bool more)
        {
            SetOption(Zmq.ZMQ_RCVTIMEO, timeout < TimeSpan.Zero ? -1 : (int)timeout.TotalMilliseconds);
            IntPtr msg = Marshal.AllocHGlobal(64);       // zmq_msg_t: 64 bytes
            try
            {
                Zmq.zmq_msg_init(msg);
                int size;
                // mono stops threads with signals for its garbage collector: a receive it
                // interrupts (EINTR) is tried again.
                while ((size = Zmq.zmq_msg_recv(msg, Handle, 0)) < 0 && Zmq.zmq_errno() == Zmq.EINTR)
                {
                }
                if (size < 0)
                {
                    int errno = Zmq.zmq_errno();
                    Zmq.zmq_msg_close(msg);
                    data = null;
                    more = false;
                    if (errno == Zmq.EAGAIN)
                        return false;
                    throw Zmq.Error("zmq_msg_recv", errno);
                }
                data = new byte[size];
                if (size > 0)
                    Marshal.Copy(Zmq.zmq_msg_data(msg), data, 0, size);
                more = Zmq.zmq_msg_more(msg) != 0;
                Zmq.zmq_msg_close(msg);
                return true;
            }
            finally
            {
                Marshal.FreeHGlobal(msg);
            }
        }
    }

    public class SocketOptions
    {
        readonly NetMQSocket socket;

        public SocketOptions(NetMQSocket socket)
        {
            this.socket = socket;
        }

        public TimeSpan Linger
        {
            set => socket.SetOption(Zmq.ZMQ_LINGER, value < TimeSpan.Zero ? -1 : (int)value.TotalMilliseconds);
        }

        public int ReceiveHighWatermark
        {
            set => socket.SetOption(Zmq.ZMQ_RCVHWM, value);
        }
    }

    public static class ReceivingSocketExtensions
    {
        // NetMQ's SendReceiveConstants.DefaultEncoding.
        static readonly Encoding DefaultEncoding = Encoding.UTF8;

        public static string ReceiveFrameString(this IReceivingSocket socket)
        {
            ((NetMQSocket)socket).TryReceiveFrame(TimeSpan.FromMilliseconds(-1), out byte[] data, out bool more);
            return DefaultEncoding.GetString(data);
        }

        public static bool TryReceiveFrameString(this IReceivingSocket socket, TimeSpan timeout, out string frameString, out bool more)
        {
            if (((NetMQSocket)socket).TryReceiveFrame(timeout, out byte[] data, out more))
            {
                frameString = DefaultEncoding.GetString(data);
                return true;
            }
            frameString = null;
            return false;
        }
    }

    public static class NetMQConfig
    {
        static readonly object gate = new object();
        static IntPtr context;

        // NetMQ makes its one context when the first socket needs it, and again after Cleanup.
        internal static IntPtr Context
        {
            get
            {
                lock (gate)
                {
                    if (context == IntPtr.Zero)
                        context = Zmq.zmq_ctx_new();
                    return context;
                }
            }
        }

        public static void Cleanup(bool block = true)
        {
            lock (gate)
            {
                if (context == IntPtr.Zero)
                    return;
                // zmq_ctx_term waits for every socket to be closed: only where told to block.
                if (block)
                    Zmq.zmq_ctx_term(context);
                else
                    Zmq.zmq_ctx_shutdown(context);
                context = IntPtr.Zero;
            }
        }
    }

    static class Zmq
    {
        const string Lib = "libzmq";
        internal const int ZMQ_SUB = 2;
        internal const int ZMQ_SUBSCRIBE = 6;
        internal const int ZMQ_LINGER = 17;
        internal const int ZMQ_RCVHWM = 24;
        internal const int ZMQ_RCVTIMEO = 27;
        internal const int EINTR = 4;
        internal const int EAGAIN = 11;

        internal static Exception Error(string what) => Error(what, zmq_errno());

        internal static Exception Error(string what, int errno) =>
            new NetMQException($"{what}: {Marshal.PtrToStringAnsi(zmq_strerror(errno))}");

        [DllImport(Lib)] internal static extern IntPtr zmq_ctx_new();
        [DllImport(Lib)] internal static extern int zmq_ctx_term(IntPtr context);
        [DllImport(Lib)] internal static extern int zmq_ctx_shutdown(IntPtr context);
        [DllImport(Lib)] internal static extern IntPtr zmq_socket(IntPtr context, int type);
        [DllImport(Lib)] internal static extern int zmq_close(IntPtr socket);
        [DllImport(Lib)] internal static extern int zmq_connect(IntPtr socket, string endpoint);
        [DllImport(Lib)] internal static extern int zmq_setsockopt(IntPtr socket, int option, ref int value, UIntPtr size);
        [DllImport(Lib)] internal static extern int zmq_setsockopt(IntPtr socket, int option, byte[] value, UIntPtr size);
        [DllImport(Lib)] internal static extern int zmq_msg_init(IntPtr msg);
        [DllImport(Lib)] internal static extern int zmq_msg_recv(IntPtr msg, IntPtr socket, int flags);
        [DllImport(Lib)] internal static extern IntPtr zmq_msg_data(IntPtr msg);
        [DllImport(Lib)] internal static extern int zmq_msg_more(IntPtr msg);
        [DllImport(Lib)] internal static extern int zmq_msg_close(IntPtr msg);
        [DllImport(Lib)] internal static extern int zmq_errno();
        [DllImport(Lib)] internal static extern IntPtr zmq_strerror(int errnum);
    }

    public class NetMQException : Exception
    {
        internal NetMQException(string message) : base(message)
        {
        }
    }
}

namespace NetMQ.Sockets
{
    public class SubscriberSocket : NetMQSocket
    {
        public SubscriberSocket(string connectionString = null) : base(Zmq.ZMQ_SUB)
        {
            if (connectionString != null)
                Connect(connectionString);
        }

        public virtual void Subscribe(string topic)
        {
            SetOption(Zmq.ZMQ_SUBSCRIBE, Encoding.UTF8.GetBytes(topic));
        }
    }
}
