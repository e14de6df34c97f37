// A stand-in for AsyncIO.dll (NetMQ's socket layer), holding only what
// docs/clients/unity/PosecastSubscriber.cs calls: AsyncIO.ForceDotNet.Force(), which makes NetMQ
// use .NET's managed sockets (the way to run NetMQ in Unity). The stand-in NetMQ (NetMQ.cs) is
// libzmq's, so there is nothing to choose here.

namespace AsyncIO
{
    public static class ForceDotNet
    {
        public static void Force()
        {
        }
    }
}
