// A stand-in for UnityEngine.dll, holding only the members docs/clients/unity/PosecastSubscriber.cs
// uses, with the names and signatures of Unity's scripting API (docs.unity3d.com/ScriptReference),
// so that the example is compiled against them where Unity is not installed (tests/test_unity_client.py).
// A member the example uses wrongly, or one Unity lacks, fails that compile only if it is left
// out here: add nothing the example does not use.
//
// What it does is as much as the harness (Harness.cs) needs: GameObjects have no rotation or
// scale, and Debug writes one line to standard output per message, "[Log] ...", "[Warning] ..."
// or "[Error] ...".

using System;
using System.Runtime.CompilerServices;
using System.Threading;

[assembly: InternalsVisibleTo("harness")]

namespace UnityEngine
{
    public class Object
    {
    }

    public class Component : Object
    {
        Transform own;

        // Unity: the Transform of the GameObject the component is on (a Transform's is itself).
        public Transform transform => this as Transform ?? (own ?? (own = new Transform()));
    }

    public class Behaviour : Component
    {
    }

    public class MonoBehaviour : Behaviour
    {
    }

    // Unity's Transform cannot be made with `new` (a GameObject has one); the harness needs to.
    public class Transform : Component
    {
        public Vector3 position { get; set; }

        // Unity also applies rotation and scale, which the harness's GameObjects do not have.
        public Vector3 TransformPoint(Vector3 position) => this.position + position;
    }

    public struct Vector3
    {
        public float x;
        public float y;
        public float z;

        public Vector3(float x, float y, float z)
        {
            this.x = x;
            this.y = y;
            this.z = z;
        }

        public static Vector3 zero => new Vector3(0f, 0f, 0f);

        public static Vector3 operator +(Vector3 a, Vector3 b) => new Vector3(a.x + b.x, a.y + b.y, a.z + b.z);
    }

    public struct Mathf
    {
        public static int Min(int a, int b) => a < b ? a : b;
    }

    public abstract class PropertyAttribute : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Field, Inherited = true, AllowMultiple = false)]
    public sealed class RangeAttribute : PropertyAttribute
    {
        public readonly float min;
        public readonly float max;

        public RangeAttribute(float min, float max)
        {
            this.min = min;
            this.max = max;
        }
    }

    public class Debug
    {
        static readonly object gate = new object();
        static int errors;

        // For the harness, which stops at the first error where it is told to.
        internal static int Errors => Volatile.Read(ref errors);

        public static void Log(object message) => Write("Log", message);

        public static void LogWarning(object message) => Write("Warning", message);

        public static void LogError(object message)
        {
            Write("Error", message);
            Interlocked.Increment(ref errors);
        }

        // Unity's Debug may be called from any thread: one line at a time.
        static void Write(string level, object message)
        {
            lock (gate)
            {
                Console.Out.WriteLine($"[{level}] {message}");
                Console.Out.Flush();
            }
        }
    }
}
