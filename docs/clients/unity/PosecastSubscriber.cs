// PosecastSubscriber.cs - drive 17 Transforms from Posecast's live pose stream in Unity.
//
// NOTE: a documentation example, never run inside Unity. What Posecast's tests check
// (tests/test_unity_client.py, with Debian's mono-mcs and Json.NET): this file compiles,
// warning-free, against stand-ins for exactly the UnityEngine, NetMQ and AsyncIO members it uses
// (tests/unity_client/, written to those libraries' documented signatures), and it runs under mono
// against real publishers - Start, the receiver thread, Update and OnDestroy called as Unity calls
// them, the stand-in NetMQ socket being libzmq's. Not checked: Unity itself (the Editor, the player,
// IL2CPP builds), NetMQ's own sockets and its AsyncIO on Unity, Json.NET 13 (the tests have 6.0.8).
//
// Setup
//   1. Packages: NetMQ (NuGet "NetMQ" 4.x, e.g. via NuGetForUnity, or NetMQ.dll + AsyncIO.dll in
//      Assets/Plugins) and Json.NET: Package Manager > Add package by name >
//      com.unity.nuget.newtonsoft-json
//   2. Run the publisher with JSON payloads in Unity's axes:
//          posecast run 0 --encoding json --axes unity
//      `--axes unity` converts the 3D joints for you to Unity's frame: left-handed, x right,
//      y up, z forward, metres. (Without it they are in the camera frame: y down, right-handed.)
//   3. Add this component to an empty GameObject (the pelvis is placed at its origin, or, with
//      placeAtRoot, where the camera sees it relative to this object) and fill `joints` with 17
//      Transforms (spheres will do) in the order of the meta message's joint_names
//      (docs/protocol.md):
//          0 pelvis, 1 r_hip, 2 r_knee, 3 r_ankle, 4 l_hip, 5 l_knee, 6 l_ankle, 7 spine,
//          8 thorax, 9 neck_nose, 10 head_top, 11 l_shoulder, 12 l_elbow, 13 l_wrist,
//          14 r_shoulder, 15 r_elbow, 16 r_wrist
//      This sets joint *positions*; a rigged humanoid needs bone rotations computed from them
//      (or an IK rig with these Transforms as targets).
//
// The stream (docs/protocol.md): two-frame messages [topic, payload] on topics "meta.<source>"
// (the stream's description, again every 2 s), "pose.<source>" (one per frame) and
// "end.<source>" (the publisher's last message: why it ended, how many poses it sent).
//
// When a stream ends, the console says so once, with the poses the publisher sent and the ones
// that came here, and the joints keep the last pose (a body frozen, not collapsed); `Ended` tells
// game code, which may hide the body. The component then waits for the next stream: ZeroMQ
// reconnects by itself, so restarting the publisher (another camera, another clip) brings the
// body back without leaving Play mode. (The C client and `posecast listen` stop at the end: a
// command's job ends with its stream; a game's does not.)
//
// Why Json.NET and not JsonUtility: Unity's built-in JsonUtility cannot deserialize nested
// arrays - `joints_3d` is a list of [x, y, z] lists (float[][]), which JsonUtility silently
// leaves empty. Json.NET handles float[][] directly. (With the default msgpack encoding, use a
// MessagePack library instead, e.g. MessagePack-CSharp.)
//
// Threading: NetMQ sockets are not thread-safe and receiving blocks, so one background thread
// owns the socket and reads every message in order (PosecastStream, plain C#), and hands only
// the newest pose to Update() (older, unconsumed ones are simply replaced: the game always shows
// the latest pose). Debug.Log may be called from any thread.

using System;
using System.Collections.Generic;
using System.Threading;
using NetMQ;
using NetMQ.Sockets;
using Newtonsoft.Json;
using UnityEngine;

[Serializable]
public class PosecastPerson
{
    public int id;
    public float score;
    public float[] bbox;          // x0, y0, x1, y1, input-image pixels
    public float[][] joints_3d;   // 17 x [x, y, z], metres, relative to the pelvis
    public float[][] joints_2d;   // 17 x [u, v], input-image pixels
    public float[] conf;          // 17 x confidence, 0..1
    public float[] root_3d;       // the pelvis seen from the camera, same axes; null when not sent
}

[Serializable]
public class PosecastPose
{
    public string type;           // "pose"
    public int schema;
    public long seq;              // +1 per message; a gap is a lost message
    public double t_capture;      // seconds since the Unix epoch
    public double? t_media;       // seconds into the video; null for cameras and images
    public double t_publish;      // t_publish - t_capture = the pipeline's latency (not on a replay)
    public int[] image_size;
    public PosecastPerson[] people;   // empty when nobody is in the frame
}

[Serializable]
public class PosecastMeta
{
    public string type;           // "meta"
    public int schema;
    public string source;
    public int[] image_size;
    public double? fps;           // null where unknown
    public string[] joint_names;
    public int[] parents;
    public Dictionary<string, string> axes;   // e.g. "frame": "unity", "y": "up", "handedness": "left"
    public bool replay;           // true for `posecast replay`: t_capture is the recording's
}

[Serializable]
public class PosecastEnd
{
    public string type;           // "end"
    public int schema;
    public string source;
    public string reason;         // "end_of_input", "stopped" or "failed"
    public long poses;            // pose messages the publisher sent in its last run
    public long? last_seq;        // the last one's seq; null where none was sent
    public double t_publish;
}

// Reads the stream's messages in the order they come, and says what matters once: plain C#,
// without Unity or NetMQ (the tests run it against a real publisher). Called by one thread only.
public class PosecastStream
{
    readonly int jointCount;
    readonly Action<string> log, logWarning, logError;
    string meta;                  // the stream's meta as it came: the same stream sends the same one every 2 s
    bool usable;                  // that meta is schema 1 in Unity's axes: only then are poses shown
    bool saidNotJson;             // a msgpack stream is said once, not at each message
    long received;                // pose messages of this run that came here
    long lastSeq = -1;
    volatile PosecastEnd ended;

    public PosecastStream(int jointCount, Action<string> log, Action<string> logWarning, Action<string> logError)
    {
        this.jointCount = jointCount;
        this.log = log;
        this.logWarning = logWarning;
        this.logError = logError;
    }

    // The last stream's end message, once it ended; null while a stream runs. Any thread may read it.
    public PosecastEnd Ended => ended;

    // Reads one message; returns the pose to show, or null.
    public PosecastPose Read(string topic, string payload)
    {
        if (payload.Length == 0 || payload[0] != '{')
        {
            if (!saidNotJson)
                logError("Posecast: the payload is not JSON; run the publisher with --encoding json");
            saidNotJson = true;
            return null;
        }
        saidNotJson = false;
        try
        {
            // Topics are "<kind>.<source>", and a source may hold dots: compare the prefix only.
            if (topic.StartsWith("pose.", StringComparison.Ordinal))
                return OnPose(JsonConvert.DeserializeObject<PosecastPose>(payload));
            if (topic.StartsWith("meta.", StringComparison.Ordinal))
                OnMeta(payload);
            else if (topic.StartsWith("end.", StringComparison.Ordinal))
                OnEnd(JsonConvert.DeserializeObject<PosecastEnd>(payload));
        }
        catch (JsonException e)
        {
            logWarning("Posecast: a message that cannot be read: " + e.Message);
        }
        return null;
    }

    PosecastPose OnPose(PosecastPose pose)
    {
        if (pose.seq <= lastSeq)
            received = 0;             // seq starts again: a new run (a replay's --loop, a publisher restarted)
        lastSeq = pose.seq;
        received++;
        return usable && pose.schema == 1 ? pose : null;
    }

    void OnMeta(string payload)
    {
        ended = null;                 // a meta after an end announces a new stream
        if (payload == meta)
            return;                   // the same stream's meta again: checked and said already
        PosecastMeta m = JsonConvert.DeserializeObject<PosecastMeta>(payload);
        meta = payload;
        usable = Check(m);
    }

    // Whether the stream's poses can drive the joints: schema 1, in Unity's axes. Anything else
    // is refused, not guessed at: Godot's axes also have y up, but z points back, and applied as
    // Unity's they would turn the body round.
    bool Check(PosecastMeta m)
    {
        if (m.schema != 1)
        {
            logError($"Posecast: unknown schema {m.schema}; this script knows schema 1 and ignores the stream");
            return false;
        }
        string frame = null;
        if (m.axes == null || !m.axes.TryGetValue("frame", out frame) || frame != "unity")
        {
            logError($"Posecast: the stream's axes are '{frame ?? "unknown"}', not Unity's; run the publisher with --axes unity");
            return false;
        }
        if (m.joint_names != null && m.joint_names.Length != jointCount)
            logWarning($"Posecast: the stream has {m.joint_names.Length} joints, `joints` has {jointCount}");
        log($"Posecast: showing the stream '{m.source}'");
        return true;
    }

    void OnEnd(PosecastEnd end)
    {
        string line = $"Posecast: the stream '{end.source}' ended ({end.reason}): {end.poses} pose messages sent, "
                      + $"{received} received here; the last pose stays shown until a new stream starts";
        if (end.reason == "failed")
            logWarning(line + " (the publisher's own error line says what failed)");
        else
            log(line);
        // The next stream is shown only once its own meta has been checked.
        meta = null;
        usable = false;
        received = 0;
        lastSeq = -1;
        ended = end;
    }
}

public class PosecastSubscriber : MonoBehaviour
{
    public string endpoint = "tcp://127.0.0.1:5556";
    public Transform[] joints = new Transform[17];      // in the meta message's joint_names order
    [Range(0f, 1f)] public float minConfidence = 0.0f;  // leave joints below this where they are
    public bool placeAtRoot = false;    // offset by root_3d: this GameObject then stands for the camera

    // The last stream's end message once it ended (why, and how many poses), null while a stream
    // runs: game code may hide the body or say that tracking stopped.
    public PosecastEnd Ended => stream?.Ended;

    PosecastStream stream;        // reads on the receiver thread; its Ended may be read from any
    PosecastPose latestPose;      // written by the receiver thread, taken by Update()
    Thread receiver;
    volatile bool stopping;

    void Start()
    {
        AsyncIO.ForceDotNet.Force();    // NetMQ in Unity: use managed sockets, not the IOCP path
        stream = new PosecastStream(joints.Length, m => Debug.Log(m), m => Debug.LogWarning(m),
                                    m => Debug.LogError(m));
        receiver = new Thread(Receive) { IsBackground = true, Name = "Posecast receiver" };
        receiver.Start();
    }

    void Receive()
    {
        try
        {
            using (var sub = new SubscriberSocket())
            {
                sub.Options.Linger = TimeSpan.Zero;
                // Only the present matters: a queue of a few messages, not ZeroMQ's 1,000 (100 s at
                // 10 fps, all played back after a stall in the Editor).
                sub.Options.ReceiveHighWatermark = 4;
                sub.Connect(endpoint);
                sub.Subscribe("pose.");     // topics are prefixes: every source
                sub.Subscribe("meta.");     // subscribing also makes the publisher resend meta
                sub.Subscribe("end.");      // the publisher's last message
                while (!stopping)
                {
                    // [topic, payload]; wait at most 100 ms so that stopping is noticed.
                    if (!sub.TryReceiveFrameString(TimeSpan.FromMilliseconds(100), out string topic, out bool more) || !more)
                        continue;
                    PosecastPose pose = stream.Read(topic, sub.ReceiveFrameString());
                    if (pose != null)
                        Interlocked.Exchange(ref latestPose, pose);
                }
            }
        }
        catch (Exception e)         // on this thread nothing else would say it
        {
            Debug.LogError($"Posecast: receiving from '{endpoint}' failed: {e.Message} (an endpoint is tcp://HOST:PORT)");
        }
    }

    void Update()
    {
        PosecastPose pose = Interlocked.Exchange(ref latestPose, null);
        if (pose == null || pose.people == null || pose.people.Length == 0)
            return;                     // nothing new, or nobody in the frame: keep the last pose
        PosecastPerson person = pose.people[0];
        Vector3 root = Vector3.zero;
        if (placeAtRoot && person.root_3d != null && person.root_3d.Length == 3)
            root = new Vector3(person.root_3d[0], person.root_3d[1], person.root_3d[2]);
        int n = Mathf.Min(joints.Length, person.joints_3d.Length);
        for (int i = 0; i < n; i++)
        {
            if (joints[i] == null || person.conf[i] < minConfidence)
                continue;
            float[] p = person.joints_3d[i];
            joints[i].position = transform.TransformPoint(root + new Vector3(p[0], p[1], p[2]));
        }
    }

    void OnDestroy()
    {
        stopping = true;
        receiver?.Join(1000);
        NetMQConfig.Cleanup(false);     // otherwise the Editor can hang on the next Play
    }
}
