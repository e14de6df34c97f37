// PosecastSubscriber.cs - drive 17 Transforms from Posecast's live pose stream in Unity.
//
// NOTE: a documentation example. It was NOT compiled or run as part of Posecast's tests (no
// Unity or .NET toolchain there); the C client in docs/clients/c is the tested reference.
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
// Why Json.NET and not JsonUtility: Unity's built-in JsonUtility cannot deserialize nested
// arrays - `joints_3d` is a list of [x, y, z] lists (float[][]), which JsonUtility silently
// leaves empty. Json.NET handles float[][] directly. (With the default msgpack encoding, use a
// MessagePack library instead, e.g. MessagePack-CSharp.)
//
// Threading: NetMQ sockets are not thread-safe and receiving blocks, so one background thread
// owns the socket, parses each message, and hands only the newest one to Update() (older,
// unconsumed ones are simply replaced: the game always shows the latest pose).

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
    public long seq;
    public double t_capture;      // seconds since the Unix epoch
    public double? t_media;
    public double t_publish;      // t_publish - t_capture = the pipeline's latency
    public int[] image_size;
    public PosecastPerson[] people;
}

[Serializable]
public class PosecastMeta
{
    public string type;           // "meta"
    public int schema;
    public string source;
    public string[] joint_names;
    public int[] parents;
    public Dictionary<string, object> axes;   // e.g. "y": "up", "handedness": "left"
}

public class PosecastSubscriber : MonoBehaviour
{
    public string endpoint = "tcp://127.0.0.1:5556";
    public Transform[] joints = new Transform[17];      // in the meta message's joint_names order
    [Range(0f, 1f)] public float minConfidence = 0.0f;  // leave joints below this where they are
    public bool placeAtRoot = false;    // offset by root_3d: this GameObject then stands for the camera

    PosecastPose latestPose;      // written by the receiver thread, taken by Update()
    PosecastMeta latestMeta;
    bool streamUsable;            // the last meta is schema 1 in Unity's axes: only then are poses applied
    Thread receiver;
    volatile bool stopping;

    void Start()
    {
        AsyncIO.ForceDotNet.Force();    // NetMQ in Unity: use managed sockets, not the IOCP path
        receiver = new Thread(Receive) { IsBackground = true, Name = "Posecast receiver" };
        receiver.Start();
    }

    void Receive()
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
            while (!stopping)
            {
                // [topic, payload]; wait at most 100 ms so that stopping is noticed.
                if (!sub.TryReceiveFrameString(TimeSpan.FromMilliseconds(100), out string topic, out bool more) || !more)
                    continue;
                string payload = sub.ReceiveFrameString();
                if (payload.Length == 0 || payload[0] != '{')
                {
                    Debug.LogError("Posecast: the payload is not JSON; run the publisher with --encoding json");
                    return;
                }
                try
                {
                    if (topic.StartsWith("pose.", StringComparison.Ordinal))
                        Interlocked.Exchange(ref latestPose, JsonConvert.DeserializeObject<PosecastPose>(payload));
                    else if (topic.StartsWith("meta.", StringComparison.Ordinal))
                        Interlocked.Exchange(ref latestMeta, JsonConvert.DeserializeObject<PosecastMeta>(payload));
                }
                catch (JsonException e)
                {
                    Debug.LogWarning("Posecast: bad message: " + e.Message);
                }
            }
        }
    }

    void Update()
    {
        PosecastMeta meta = Interlocked.Exchange(ref latestMeta, null);
        if (meta != null)
            streamUsable = CheckMeta(meta);

        PosecastPose pose = Interlocked.Exchange(ref latestPose, null);
        if (!streamUsable || pose == null || pose.schema != 1 || pose.people == null || pose.people.Length == 0)
            return;                     // no usable meta yet, nothing new, or nobody in the frame: keep the last pose
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

    // Whether the stream's poses can drive the joints: schema 1, in Unity's axes. Anything else
    // is refused, not guessed at: Godot's axes also have y up, but z points back, and applied as
    // Unity's they would turn the body round.
    bool CheckMeta(PosecastMeta meta)
    {
        if (meta.schema != 1)
        {
            Debug.LogError($"Posecast: unknown schema {meta.schema}; this script knows schema 1 and ignores the stream");
            return false;
        }
        object frame = null;
        if (meta.axes == null || !meta.axes.TryGetValue("frame", out frame) || (frame as string) != "unity")
        {
            Debug.LogError($"Posecast: the stream's axes are '{frame ?? "unknown"}', not Unity's; run the publisher with --axes unity");
            return false;
        }
        if (meta.joint_names != null && meta.joint_names.Length != joints.Length)
            Debug.LogWarning($"Posecast: the stream has {meta.joint_names.Length} joints, `joints` has {joints.Length}");
        return true;
    }

    void OnDestroy()
    {
        stopping = true;
        receiver?.Join(1000);
        NetMQConfig.Cleanup(false);     // otherwise the Editor can hang on the next Play
    }
}
