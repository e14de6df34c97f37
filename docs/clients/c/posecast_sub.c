/*
 * posecast_sub.c - a minimal C subscriber for Posecast's live pose stream.
 *
 *   posecast_sub [ENDPOINT] [COUNT]
 *
 *   ENDPOINT  the publisher, default tcp://127.0.0.1:5556
 *   COUNT     stop after this many pose messages; 0 (the default) runs until the stream ends
 *             (the publisher's end message) or Ctrl-C
 *
 * Build (Debian/Ubuntu: apt-get install libzmq3-dev):
 *
 *   cc -std=c99 -Wall -Wextra -O2 posecast_sub.c -lzmq -o posecast_sub      (or: make)
 *
 * Run a publisher with JSON payloads, then this program:
 *
 *   posecast run 0 --encoding json           (or: posecast replay TRACK.jsonl --encoding json)
 *   ./posecast_sub tcp://127.0.0.1:5556 10
 *
 * The publisher sends two-frame messages [topic, payload] (docs/protocol.md):
 *   topic "pose.<source>"  one per frame: seq, t_capture, t_publish, people[] with joints_3d
 *                          (17 x [x, y, z] in the meta's axes and units: metres in the
 *                          camera's axes by default), joints_2d (17 x [u, v] pixels), conf
 *   topic "meta.<source>"  the stream's description (joint names, parents, axes, units); it is
 *                          sent again whenever a subscriber connects, and every few seconds
 *   topic "end.<source>"   the publisher's last message: why the stream ended ("reason") and how
 *                          many pose messages it sent ("poses")
 *
 * For each pose message this prints one line:
 *   seq=<n> people=<k> pelvis_2d=<u>,<v> head_top_3d=<x>,<y>,<z> latency_ms=<t_publish - t_capture>
 * (the first person's joints; "-" when nobody is in the frame), and once the first meta line:
 *   meta source=<name> joints=<n> axes=<frame> units=<m or cm>[ replay]
 * and at the stream's end, where it stops:
 *   end reason=<end_of_input, stopped or failed> sent=<n> received=<pose messages that came here>
 * The latency is "-" until a meta message has said the stream is live: a replay (the meta's
 * "replay": true) keeps the t_capture its poses were recorded with, so there it is no latency.
 *
 * The JSON "parsing" here is a tiny scanner over the few keys this program needs (strstr and
 * strtod). It relies on the publisher's compact output and is NOT a JSON parser: a real client
 * should decode the payload with a library - cJSON for the JSON encoding, or msgpack-c for the
 * default msgpack encoding (no number to parse from text; its pose messages are not smaller,
 * since their numbers are 9-byte doubles where the JSON gives a rounded figure's few digits).
 *
 * Exit codes: 0 after COUNT pose messages or at the stream's end, 2 on bad arguments, a non-JSON payload or an unknown
 * schema, 1 on a ZeroMQ error, 130 when interrupted (Ctrl-C).
 *
 * Depends only on libzmq and the C library (C99).
 */

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define DEFAULT_ENDPOINT "tcp://127.0.0.1:5556"
#define SCHEMA 1

/* Joint indices in the Human3.6M-17 order that the meta message's joint_names lists. */
#define PELVIS 0
#define HEAD_TOP 10

static volatile sig_atomic_t interrupted = 0;

/* What the last meta message said: 0 none yet, 1 a live stream, 2 a replay of a recording. */
enum { STREAM_UNKNOWN, STREAM_LIVE, STREAM_REPLAY };
static int stream_kind = STREAM_UNKNOWN;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* ---- a tiny scanner for the publisher's compact JSON ------------------------------------- */

static const char *skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* The value of the first `"key":` at or after `from` (past the colon), or NULL. */
static const char *find_key(const char *from, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = strchr(from, '"'); p != NULL; p = strchr(p + 1, '"')) {
        if (strncmp(p + 1, key, n) == 0 && p[n + 1] == '"') {
            const char *q = skip_space(p + n + 2);
            if (*q == ':')
                return skip_space(q + 1);
        }
    }
    return NULL;
}

/* Reads a number at `p`; returns 1 on success. */
static int read_number(const char *p, double *out)
{
    char *end;
    if (p == NULL)
        return 0;
    *out = strtod(p, &end);     /* the default "C" locale reads '.' as the decimal point */
    return end != p;
}

/* Reads `n` numbers of the array `[a, b, ...]` that starts at `p`; returns 1 on success. */
static int read_numbers(const char *p, double *out, int n)
{
    if (p == NULL || *(p = skip_space(p)) != '[')
        return 0;
    p++;
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(p, &end);
        if (end == p)
            return 0;
        p = skip_space(end);
        if (*p == ',')
            p++;
    }
    return 1;
}

/* The `row`-th inner array of a flat array of arrays `[[...], [...], ...]` starting at `p`. */
static const char *nth_row(const char *p, int row)
{
    if (p == NULL || *p != '[')
        return NULL;
    for (int i = 0; i <= row; i++) {
        p = strchr(p + 1, '[');
        if (p == NULL)
            return NULL;
    }
    return p;
}

/* Copies the string value at `p` (no escapes expected) into `out`; returns 1 on success. */
static int read_string(const char *p, char *out, size_t size)
{
    size_t n = 0;
    if (p == NULL || *p != '"')
        return 0;
    for (p++; *p != '\0' && *p != '"'; p++)
        if (n + 1 < size)
            out[n++] = *p;
    out[n] = '\0';
    return *p == '"';
}

/* Counts the strings in the array `["a", "b", ...]` that starts at `p`. */
static int count_strings(const char *p)
{
    int quotes = 0;
    if (p == NULL || *p != '[')
        return 0;
    for (p++; *p != '\0' && *p != ']'; p++)
        if (*p == '"')
            quotes++;
    return quotes / 2;
}

/* ---- the three message kinds --------------------------------------------------------------- */

/* Returns 0, or 2 when the stream's schema is one this program does not know. */
static int on_meta(const char *json)
{
    static int shown = 0;
    char source[128], frame[32], units[8];
    const char *axes, *replay;
    double schema = 0;

    if (read_number(find_key(json, "schema"), &schema) && (int)schema != SCHEMA) {
        fprintf(stderr, "posecast_sub: error: the stream uses schema %d; this client knows schema %d\n",
                (int)schema, SCHEMA);
        return 2;
    }
    replay = find_key(json, "replay");
    stream_kind = replay != NULL && strncmp(replay, "true", 4) == 0 ? STREAM_REPLAY : STREAM_LIVE;
    if (!shown) {
        if (!read_string(find_key(json, "source"), source, sizeof source))
            strcpy(source, "?");
        /* The axes' own keys, searched from where "axes" starts ("units" is also a top-level key). */
        axes = find_key(json, "axes");
        if (axes == NULL || !read_string(find_key(axes, "frame"), frame, sizeof frame))
            strcpy(frame, "?");
        if (axes == NULL || !read_string(find_key(axes, "units"), units, sizeof units))
            strcpy(units, "?");
        printf("meta source=%s joints=%d axes=%s units=%s%s\n", source, count_strings(find_key(json, "joint_names")),
               frame, units, stream_kind == STREAM_REPLAY ? " replay" : "");
        fflush(stdout);
        shown = 1;
    }
    return 0;
}

static void on_pose(const char *json)
{
    double seq = -1, t_capture = 0, t_publish = 0, uv[2], xyz[3];
    int people = 0;

    read_number(find_key(json, "seq"), &seq);
    /* One "joints_3d" key per person (and people[] is the only place that key appears). */
    for (const char *p = find_key(json, "joints_3d"); p != NULL; p = find_key(p, "joints_3d"))
        people++;
    printf("seq=%.0f people=%d", seq, people);

    /* The first person's joints: pelvis in pixels, head top in the meta's units (relative to the pelvis). */
    if (people > 0 && read_numbers(nth_row(find_key(json, "joints_2d"), PELVIS), uv, 2))
        printf(" pelvis_2d=%.2f,%.2f", uv[0], uv[1]);
    else
        printf(" pelvis_2d=-");
    if (people > 0 && read_numbers(nth_row(find_key(json, "joints_3d"), HEAD_TOP), xyz, 3))
        printf(" head_top_3d=%.4f,%.4f,%.4f", xyz[0], xyz[1], xyz[2]);
    else
        printf(" head_top_3d=-");

    /* t_publish - t_capture: the pipeline's latency, both stamped by the publisher's clock. */
    if (stream_kind == STREAM_LIVE && read_number(find_key(json, "t_capture"), &t_capture)
        && read_number(find_key(json, "t_publish"), &t_publish))
        printf(" latency_ms=%.1f\n", (t_publish - t_capture) * 1000.0);
    else
        printf(" latency_ms=-\n");
    fflush(stdout);
}

/* The stream is over: says why, and how many of its pose messages came here. */
static void on_end(const char *json, long received)
{
    char reason[32];
    double sent = -1;

    if (!read_string(find_key(json, "reason"), reason, sizeof reason))
        strcpy(reason, "?");
    read_number(find_key(json, "poses"), &sent);
    printf("end reason=%s sent=%.0f received=%ld\n", reason, sent, received);
    fflush(stdout);
}

/* ---- receiving ----------------------------------------------------------------------------- */

/* Receives one frame as a NUL-terminated string (caller frees). Sets *more when frames follow. */
static char *recv_frame(void *sock, int *more)
{
    zmq_msg_t msg;
    char *text = NULL;
    size_t size;

    *more = 0;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, sock, 0) >= 0) {
        size = zmq_msg_size(&msg);
        text = malloc(size + 1);
        if (text != NULL) {
            memcpy(text, zmq_msg_data(&msg), size);
            text[size] = '\0';
        }
        *more = zmq_msg_more(&msg);
    }
    zmq_msg_close(&msg);
    return text;
}

int main(int argc, char **argv)
{
    const char *endpoint = argc > 1 ? argv[1] : DEFAULT_ENDPOINT;
    long count = 0, poses = 0;
    int status = 0, linger = 0;
    void *ctx, *sock;

    if (argc > 3 || (argc > 1 && strcmp(argv[1], "-h") == 0)) {
        fprintf(stderr, "usage: %s [ENDPOINT] [COUNT]   (default %s, COUNT 0 = forever)\n",
                argv[0], DEFAULT_ENDPOINT);
        return 2;
    }
    if (argc > 2) {
        char *end;
        count = strtol(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0' || count < 0) {
            fprintf(stderr, "posecast_sub: error: COUNT must be a whole number >= 0 (got '%s')\n", argv[2]);
            return 2;
        }
    }
    signal(SIGINT, on_sigint);

    ctx = zmq_ctx_new();
    sock = zmq_socket(ctx, ZMQ_SUB);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "posecast_sub: error: cannot connect to '%s': %s (use tcp://HOST:PORT)\n",
                endpoint, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        zmq_ctx_term(ctx);
        return 2;
    }
    /* Topics are prefixes: "pose." matches pose.<any source>. Subscribing asks for meta too. */
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "pose.", 5);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "meta.", 5);
    zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "end.", 4);

    while (!interrupted && (count == 0 || poses < count)) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        char *topic, *payload = NULL;
        int more = 0;

        /* Wait at most 250 ms at a time so that Ctrl-C is noticed promptly. */
        int ready = zmq_poll(&item, 1, 250);
        if (ready < 0 && zmq_errno() != EINTR) {
            fprintf(stderr, "posecast_sub: error: poll failed: %s\n", zmq_strerror(zmq_errno()));
            status = 1;
            break;
        }
        if (ready <= 0)
            continue;               /* timed out, or interrupted by a signal */
        topic = recv_frame(sock, &more);
        if (topic == NULL) {
            if (zmq_errno() == EINTR)
                continue;
            fprintf(stderr, "posecast_sub: error: receive failed: %s\n", zmq_strerror(zmq_errno()));
            status = 1;
            break;
        }
        if (more)
            payload = recv_frame(sock, &more);
        while (more)                    /* not part of the protocol: drop any extra frames */
            free(recv_frame(sock, &more));

        if (payload != NULL && payload[0] != '{') {
            fprintf(stderr, "posecast_sub: error: the payload is not JSON (msgpack?); "
                            "run the publisher with --encoding json\n");
            status = 2;
        } else if (payload != NULL && strncmp(topic, "meta.", 5) == 0) {
            status = on_meta(payload);
        } else if (payload != NULL && strncmp(topic, "pose.", 5) == 0) {
            on_pose(payload);
            poses++;
        } else if (payload != NULL && strncmp(topic, "end.", 4) == 0) {
            on_end(payload, poses);
            free(topic);
            free(payload);
            break;
        }
        free(topic);
        free(payload);
        if (status != 0)
            break;
    }

    zmq_close(sock);
    zmq_ctx_term(ctx);
    if (interrupted && status == 0) {
        fprintf(stderr, "posecast_sub: interrupted after %ld pose messages\n", poses);
        return 130;
    }
    return status;
}
