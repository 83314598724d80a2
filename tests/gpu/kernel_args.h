/*
 * Types shared by tests/gpu/kernels.cu (device side) and the host test
 * programs. Both sides must see the identical layout, so keep this header
 * plain C (no C++-only constructs) and free of CUDA-specific qualifiers.
 */
#ifndef BATON_GPU_KERNEL_ARGS_H
#define BATON_GPU_KERNEL_ARGS_H

#define BIG_ARG_INTS 20
#define BIG_ARG_FLOATS 45

/*
 * A by-value kernel argument of 296 bytes with internal padding and an
 * 8-byte alignment requirement (because of the double / 64-bit members).
 * Offsets on x86-64 and on the device:
 *   tag 0, scale 8, ints 16..95, floats 96..275, small 276, cookie 280,
 *   tail 288..292, sizeof 296, alignof 8.
 */
typedef struct BigArg {
    signed char tag;
    double scale;
    int ints[BIG_ARG_INTS];
    float floats[BIG_ARG_FLOATS];
    short small;
    unsigned long long cookie;
    char tail[5];
} BigArg;

/* What the argEcho kernel writes back: every argument it received. */
typedef struct EchoOut {
    BigArg big;                /* copy of the by-value struct */
    double d;                  /* the double argument */
    unsigned long long ptr;    /* the pointer argument, as an integer */
    int pointee;               /* *ptr, read on the device */
    int int_sum;               /* sum of big.ints, computed on the device */
    short s;                   /* the short argument */
    signed char c;             /* the first char argument */
    signed char c2;            /* the last char argument */
} EchoOut;

#endif /* BATON_GPU_KERNEL_ARGS_H */
