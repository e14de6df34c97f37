// Runs docs/clients/unity/PosecastSubscriber.cs the way Unity runs a component, outside Unity:
// its Start, then its Update about 100 times a second, then its OnDestroy, each found by name
// and called by reflection as Unity calls them (tests/test_unity_client.py).
//
//   harness ENDPOINT UNTIL [--place-at-root]
//
//   UNTIL  N: stop after the stream's N-th end message; "error": stop at the first error logged.
//
// The component's GameObject stands at (10, 20, 30) and its `joints` are 17 fresh Transforms at
// the origin. Standard output: the component's console lines ("[Log] ...", see UnityEngine.cs)
// and, after each end message and once more at the stop, a line "joints [[x, y, z], ...]" with
// the joints' positions, taken after one more Update (the last pose may come with the end).
// Exit code 0, or 3 (and a line saying so) where UNTIL did not happen within 30 s.

using System;
using Stopwatch = System.Diagnostics.Stopwatch;
using System.Reflection;
using System.Threading;
using Newtonsoft.Json;
using UnityEngine;

static class Harness
{
    static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    static int Main(string[] args)
    {
        var component = new PosecastSubscriber
        {
            endpoint = args[0],
            placeAtRoot = Array.IndexOf(args, "--place-at-root") >= 0,
        };
        component.transform.position = new Vector3(10f, 20f, 30f);
        for (int i = 0; i < component.joints.Length; i++)
            component.joints[i] = new Transform();
        bool untilError = args[1] == "error";
        int ends = untilError ? 0 : int.Parse(args[1]);

        Call(component, "Start");
        var clock = Stopwatch.StartNew();
        int seen = 0;
        PosecastEnd last = null;
        while (untilError ? Debug.Errors == 0 : seen < ends)
        {
            if (clock.Elapsed > Limit)
            {
                Console.WriteLine($"harness: gave up after {Limit.TotalSeconds:F0} s ({seen} end messages of {ends})");
                Call(component, "OnDestroy");
                return 3;
            }
            Call(component, "Update");
            PosecastEnd ended = component.Ended;
            if (ended != null && ended != last)
            {
                seen++;
                Call(component, "Update");
                PrintJoints(component);
            }
            last = ended;
            Thread.Sleep(10);
        }
        Call(component, "Update");
        PrintJoints(component);
        Call(component, "OnDestroy");
        return 0;
    }

    // Unity calls a component's Start, Update and OnDestroy by name, private as they are.
    static void Call(MonoBehaviour component, string method)
    {
        component.GetType().GetMethod(method, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)
            .Invoke(component, null);
    }

    static void PrintJoints(PosecastSubscriber component)
    {
        var rows = new float[component.joints.Length][];
        for (int i = 0; i < rows.Length; i++)
        {
            Vector3 p = component.joints[i].position;
            rows[i] = new[] { p.x, p.y, p.z };
        }
        Console.WriteLine("joints " + JsonConvert.SerializeObject(rows));
        Console.Out.Flush();
    }
}
