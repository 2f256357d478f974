/* A short timing of the real fast kernels in fp32 and in bf16, from which
 * `--precision auto` decides (diffusion/precision.c). Not installed. */
#ifndef FM_PRECISION_PROBE_H
#define FM_PRECISION_PROBE_H

/* The kernel shapes timed: the three kinds of work a U-Net spends its time
 * in (the VAE is nearly all 3x3 convolutions). */
typedef enum {
    FM_PROBE_CONV = 0, /* 3x3 convolution, 320 -> 320 channels, 64x64 pixels (fp32: direct or Winograd, the faster) */
    FM_PROBE_LINEAR,   /* 1024 tokens through a 320 -> 1280 linear (F16 weights, as checkpoints ship) */
    FM_PROBE_ATTENTION, /* self-attention, 1024 queries and keys, 4 heads of 40 dims */
    FM_PROBE_SHAPES
} kn_probe_shape;

/* CPU seconds of one run of each shape in each mode (the least of a few). */
typedef struct kn_probe_times {
    double fp32[FM_PROBE_SHAPES], bf16[FM_PROBE_SHAPES];
} kn_probe_times;

/* Times each shape `reps` times in each mode, alternating the modes so that
 * a load from other processes weighs on both alike, and keeps the least
 * CPU time of the calling thread. The kernels run on that one thread (a
 * scratch planned for one thread): the ratio of the two modes is a property
 * of a core, and one thread's CPU time is the measure least disturbed by
 * the rest of the machine. About 0.15 s per rep on an AVX-512 core.
 * Returns 0, or -1 when memory ran out (t untouched). */
int kn_precision_probe(kn_probe_times *t, int reps);

/* The shape's name for messages: "conv 3x3", "linear", "attention". */
const char *kn_probe_shape_name(kn_probe_shape s);

#endif
