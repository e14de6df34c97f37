"""Rasterise a posed body with OpenGL (moderngl, headless EGL on Mesa's llvmpipe on a CPU).

The camera is a pinhole in Posecast's camera axes (x right, y down, z forward, metres) with
intrinsics in crop pixels; pixel (i, j) covers [j, j+1) x [i, i+1), as everywhere in Posecast, and
OpenGL samples pixel centres, so the projected joints and the image agree exactly. Clothing is
drawn in the fragment shader from per-vertex regions and procedural patterns in the body's rest
coordinates (so patterns move with the body); shading is Lambertian from face normals plus an
ambient term. The output is premultiplied RGB, alpha and depth, for compositing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from train.synth.body import REGIONS

# Where the face's marks are, in the template's rest coordinates (metres; x across, y front (-) to
# back (+), z up), placed on the mesh's own eye sockets and mouth by eye on front close-ups of
# several bodies (anny's eye bones sit at (+-0.0295, -0.119, 0.697); its COCO keypoint
# regressor's eyes are 5 cm lower, on the cheeks, and its nose at the lower lip).
FACE_MARKS = {
    "FRONT_Y": -0.085,                                   # paint only the front of the face
    "EYE_X": 0.030, "EYE_Z": 0.703, "EYE_W": 0.013, "EYE_H": 0.006, "IRIS": 0.0055,
    "BROW_Z": 0.719, "BROW_IN": 0.012, "BROW_OUT": 0.048, "BROW_H": 0.0035,
    "MOUTH_Z": 0.634, "MOUTH_W": 0.020, "MOUTH_H": 0.005,
}

_VERTEX = """
#version 330
uniform vec4 intr;          // fx, fy, cx, cy in pixels
uniform vec2 size;          // width, height
uniform vec2 depth_range;   // near, far
in vec3 in_pos;             // camera frame, metres
in vec3 in_rest;            // rest position (texture coordinates)
in float in_region;
out vec3 v_pos;
out vec3 v_rest;
flat out int v_region;
void main() {
    float z = in_pos.z;
    float u = intr.x * in_pos.x / z + intr.z;
    float v = intr.y * in_pos.y / z + intr.w;
    float n = depth_range.x, f = depth_range.y;
    float zn = (f + n) / (f - n) - 2.0 * f * n / ((f - n) * z);
    gl_Position = vec4((2.0 * u / size.x - 1.0) * z, (1.0 - 2.0 * v / size.y) * z, zn * z, z);
    v_pos = in_pos;
    v_rest = in_rest;
    v_region = int(in_region + 0.5);
}
"""

_FRAGMENT = """
#version 330
uniform vec3 colour_a[%(R)d];
uniform vec3 colour_b[%(R)d];
uniform int pattern[%(R)d];      // 0 plain, 1 stripes, 2 checks, 3 noise-ish, 4 dots
uniform float freq[%(R)d];
uniform vec3 light_dir;          // towards the light, camera frame
uniform vec3 light_colour;
uniform float ambient;
uniform vec4 long_hair;          // rest y above x (behind), rest z above y, |rest x| under z; on when w > 0.5
uniform vec3 hair_colour;
uniform float face_on;           // eyes, brows and a mouth on the face when > 0.5
uniform vec3 eye_colour;
uniform vec3 brow_colour;
uniform vec3 lip_colour;
in vec3 v_pos;
in vec3 v_rest;
flat in int v_region;
out vec4 frag;
float hash(vec3 p) { return fract(sin(dot(p, vec3(12.9898, 78.233, 37.719))) * 43758.5453); }
void main() {
    vec3 n = normalize(cross(dFdx(v_pos), dFdy(v_pos)));
    if (dot(n, v_pos) > 0.0) n = -n;                 // face the camera
    int r = v_region;
    float f = freq[r];
    float t = 0.0;
    if (pattern[r] == 1) t = step(0.5, fract(v_rest.z * f));
    else if (pattern[r] == 2) t = mod(floor(v_rest.x * f) + floor(v_rest.z * f) + floor(v_rest.y * f), 2.0);
    else if (pattern[r] == 3) t = hash(floor(v_rest * f));
    else if (pattern[r] == 4) t = step(length(fract(v_rest.xz * f) - 0.5), 0.22);
    vec3 albedo = mix(colour_a[r], colour_b[r], t);
    // Long hair falls over the back of the neck and the shoulders: painted there, with strands.
    if (long_hair.w > 0.5 && (r == %(FACE)d || r == %(NECK)d || r == %(CHEST)d) && v_rest.y > long_hair.x
            && v_rest.z > long_hair.y && abs(v_rest.x) < long_hair.z)
        albedo = hair_colour * (0.8 + 0.4 * hash(vec3(floor(v_rest.x * 160.0), 0.0, 0.0)));
    // A face: what tells a real front from a back at a glance. Ellipses in rest x and z, on the
    // front only; the brows also where the scalp comes down to them.
    if (face_on > 0.5 && (r == %(FACE)d || r == %(SCALP)d) && v_rest.y < %(FRONT_Y)f) {
        vec2 eye = vec2(abs(v_rest.x) - %(EYE_X)f, v_rest.z - %(EYE_Z)f);
        float brow_x = abs(v_rest.x);
        if (length(eye / vec2(%(EYE_W)f, %(EYE_H)f)) < 1.0)
            albedo = length(eye) < %(IRIS)f ? eye_colour : vec3(0.75, 0.72, 0.68);
        else if (brow_x > %(BROW_IN)f && brow_x < %(BROW_OUT)f
                 && abs(v_rest.z - %(BROW_Z)f + 0.1 * (brow_x - %(EYE_X)f) * (brow_x - %(EYE_X)f) / %(EYE_X)f) < %(BROW_H)f)
            albedo = brow_colour;
        else if (length(vec2(v_rest.x, v_rest.z - %(MOUTH_Z)f) / vec2(%(MOUTH_W)f, %(MOUTH_H)f)) < 1.0)
            albedo = lip_colour;
    }
    float diffuse = max(dot(n, normalize(light_dir)), 0.0);
    vec3 c = albedo * (ambient + (1.0 - ambient) * diffuse * light_colour);
    frag = vec4(c, 1.0);
}
"""


@dataclass
class Look:
    """How one person looks: per-region colours (RGB 0..1) and patterns, and the light."""

    colour_a: np.ndarray     # (R, 3)
    colour_b: np.ndarray     # (R, 3)
    pattern: np.ndarray      # (R,) int
    freq: np.ndarray         # (R,) float, pattern cycles per metre
    light_dir: np.ndarray    # (3,) camera frame, towards the light
    light_colour: np.ndarray  # (3,)
    ambient: float
    # Long hair (off: w = 0): painted where rest y > x, rest z > y and |rest x| < z, in hair_colour.
    long_hair: np.ndarray = field(default_factory=lambda: np.zeros(4))
    hair_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))
    # A painted face (off: 0): eyes, brows and lips at FACE_MARKS on the front of the head.
    face_on: float = 0.0
    eye_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))
    brow_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))
    lip_colour: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class Rendered:
    rgb: np.ndarray          # (H, W, 3) uint8 RGB, black where there is no body
    alpha: np.ndarray        # (H, W) float32 coverage
    depth: np.ndarray        # (H, W) float32 metres along z, inf where there is no body


class BodyRenderer:
    """One OpenGL context and the mesh topology; `render` draws one posed body."""

    def __init__(self, faces: np.ndarray, region: np.ndarray, rest: np.ndarray, size: int,
                 samples: int = 4, near: float = 0.1, far: float = 100.0) -> None:
        import moderngl

        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception as exc:  # noqa: BLE001 - moderngl raises plain Exceptions
            raise RuntimeError(
                f"cannot create a headless OpenGL context ({exc}); install Debian's libegl1, "
                "libegl-mesa0 and libgl1-mesa-dri (scripts/setup.sh --train does)"
            ) from None
        self.size = size
        self.near, self.far = near, far
        self.prog = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT % {
            "R": len(REGIONS), "FACE": REGIONS.index("face"), "NECK": REGIONS.index("neck"),
            "CHEST": REGIONS.index("chest"),
            "SCALP": REGIONS.index("scalp"), **FACE_MARKS})
        nv = rest.shape[0]
        self.pos_buf = self.ctx.buffer(reserve=nv * 12)
        static = np.concatenate([rest.astype(np.float32), region.astype(np.float32)[:, None]], axis=1)
        self.static_buf = self.ctx.buffer(static.tobytes())
        self.index_buf = self.ctx.buffer(faces.astype(np.int32).tobytes())
        self.vao = self.ctx.vertex_array(
            self.prog, [(self.pos_buf, "3f", "in_pos"), (self.static_buf, "3f 1f", "in_rest", "in_region")],
            index_buffer=self.index_buf, index_element_size=4,
        )
        self.ms_fbo = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((size, size), 4, samples=samples)],
            depth_attachment=self.ctx.depth_renderbuffer((size, size), samples=samples),
        )
        self.fbo = self.ctx.framebuffer(
            color_attachments=[self.ctx.renderbuffer((size, size), 4)],
            depth_attachment=self.ctx.depth_renderbuffer((size, size)),
        )
        self.prog["size"].value = (float(size), float(size))
        self.prog["depth_range"].value = (near, far)

    def render(self, vertices_cam: np.ndarray, intrinsics: tuple[float, float, float, float], look: Look) -> Rendered:
        import moderngl

        self.pos_buf.write(np.ascontiguousarray(vertices_cam, dtype=np.float32).tobytes())
        self.prog["intr"].value = tuple(float(v) for v in intrinsics)
        self.prog["colour_a"].write(look.colour_a.astype(np.float32).tobytes())
        self.prog["colour_b"].write(look.colour_b.astype(np.float32).tobytes())
        self.prog["pattern"].write(look.pattern.astype(np.int32).tobytes())
        self.prog["freq"].write(look.freq.astype(np.float32).tobytes())
        self.prog["light_dir"].value = tuple(float(v) for v in look.light_dir)
        self.prog["light_colour"].value = tuple(float(v) for v in look.light_colour)
        self.prog["ambient"].value = float(look.ambient)
        self.prog["long_hair"].value = tuple(float(v) for v in look.long_hair)
        self.prog["hair_colour"].value = tuple(float(v) for v in look.hair_colour)
        self.prog["face_on"].value = float(look.face_on)
        self.prog["eye_colour"].value = tuple(float(v) for v in look.eye_colour)
        self.prog["brow_colour"].value = tuple(float(v) for v in look.brow_colour)
        self.prog["lip_colour"].value = tuple(float(v) for v in look.lip_colour)
        self.ms_fbo.use()
        self.ctx.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.vao.render(moderngl.TRIANGLES)
        self.ctx.copy_framebuffer(self.fbo, self.ms_fbo)
        s = self.size
        rgba = np.frombuffer(self.fbo.read(components=4, alignment=1), np.uint8).reshape(s, s, 4)[::-1]
        # Depth is read from a non-multisampled pass: resolving depth is not allowed.
        self.fbo.use()
        self.ctx.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.vao.render(moderngl.TRIANGLES)
        d = np.frombuffer(self.fbo.read(components=1, attachment=-1, dtype="f4", alignment=1), np.float32).reshape(s, s)[::-1]
        zn = d * 2.0 - 1.0
        n, f = self.near, self.far
        with np.errstate(divide="ignore"):
            depth = np.where(d < 1.0, 2.0 * f * n / ((f + n) - zn * (f - n)), np.inf).astype(np.float32)
        return Rendered(rgb=np.ascontiguousarray(rgba[:, :, :3]), alpha=rgba[:, :, 3].astype(np.float32) / 255.0, depth=depth)

    def close(self) -> None:
        self.ctx.release()
