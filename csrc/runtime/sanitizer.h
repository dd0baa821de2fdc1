/*
 * sanitizer.h — telling AddressSanitizer and valgrind about goroutine stacks.
 *
 * Both tools keep their own idea of "the stack" of each thread, and goloop
 * moves a thread between stacks behind their backs (asm_*.S).  Without being
 * told, they misjudge every frame on a goroutine stack:
 *
 *   ASan  records the bounds of the current stack (to classify addresses in
 *         its reports, to unpoison the frames a noreturn call abandons) and,
 *         with detect_stack_use_after_return, puts frames on a per-stack
 *         "fake stack".  Each switch must be bracketed: the side that leaves
 *         calls __sanitizer_start_switch_fiber(&save, bottom, size) with the
 *         bounds of the stack it is going to, and the code that then runs on
 *         that stack calls __sanitizer_finish_switch_fiber(save, ...) with
 *         the fake stack that stack saved when it last left (NULL for a
 *         stack's first entry), learning the bounds of the stack it came
 *         from.  A stack left for good passes NULL as `save`: ASan drops its
 *         fake stack; and the redzones of the frames it still held must be
 *         cleared, or they would flag whoever uses the memory next.
 *   valgrind (memcheck) takes a large jump of the stack pointer for a switch
 *         only between stacks it knows: VALGRIND_STACK_REGISTER when a stack
 *         is mapped, VALGRIND_STACK_DEREGISTER when it is unmapped.  At a
 *         switch it marks nothing: the memory below the new stack pointer
 *         keeps the state it had.  That is right for a resumed context (its
 *         red zone was live when it left) but not where gl_mcall lands, in
 *         the free part of a stack below a suspended context, which memcheck
 *         holds for dead since the frames that were there returned.  For
 *         the same reason the runtime's deliberate read of a given-back
 *         stack's dead part (stack.c's went-deep probe) must be announced.
 *
 * The sites are in proc.c (every transfer of control) and stack.c (map,
 * unmap).  Everything here compiles to nothing unless the build
 * asks for it — GL_ASAN comes from the compiler's -fsanitize=address, and
 * GL_VALGRIND from -DGOLOOP_VALGRIND (setup.py: GOLOOP_SANITIZE=address,...
 * and GOLOOP_VALGRIND=1) — so a normal build's code is unchanged.
 */
#ifndef GOLOOP_SANITIZER_H
#define GOLOOP_SANITIZER_H

#include <stddef.h>
#include <stdint.h>

/* gcc says -fsanitize=address with a macro, clang with a feature test. */
#if defined(__SANITIZE_ADDRESS__)
#  define GL_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define GL_ASAN 1
#  endif
#endif
#ifndef GL_ASAN
#  define GL_ASAN 0
#endif

#if defined(GOLOOP_VALGRIND)
#  define GL_VALGRIND 1
#else
#  define GL_VALGRIND 0
#endif

#if GL_ASAN
#  include <sanitizer/asan_interface.h>
#  include <sanitizer/common_interface_defs.h>
#endif
#if GL_VALGRIND
#  include <valgrind/memcheck.h>
#  include <valgrind/valgrind.h>
#endif

/* ---- ASan: fiber switches ------------------------------------------------ */

/* On a function that must not be instrumented by ASan (see its use). */
#if GL_ASAN
#  define GL_NO_ASAN __attribute__((no_sanitize_address))
#else
#  define GL_NO_ASAN
#endif

/* About to leave the current stack for [lo, hi).  *fake_save receives the
 * current stack's fake stack, to be handed back when control returns to it;
 * fake_save NULL: the current stack is never returned to. */
static inline void gl_san_switch_begin(void **fake_save, uintptr_t lo, uintptr_t hi)
{
#if GL_ASAN
    __sanitizer_start_switch_fiber(fake_save, (const void *)lo, (size_t)(hi - lo));
#else
    (void)fake_save; (void)lo; (void)hi;
#endif
}

/* Arrived on a stack: `fake` is what its gl_san_switch_begin saved (NULL on
 * its first entry).  *from_lo and *from_hi get the bounds of the stack that
 * was left, as ASan knew them. */
static inline void gl_san_switch_end(void *fake, uintptr_t *from_lo, uintptr_t *from_hi)
{
#if GL_ASAN
    const void *bottom = NULL;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(fake, &bottom, &size);
    *from_lo = (uintptr_t)bottom;
    *from_hi = (uintptr_t)bottom + size;
#else
    (void)fake; (void)from_lo; (void)from_hi;
#endif
}

/* The frames from here to the top of the current stack are left for good
 * (a goroutine that finished): clear the redzones they hold in the shadow,
 * or they would flag whoever uses that memory next.  Every frame below
 * cleared its own when it returned.  This is what ASan does before a
 * noreturn call; it costs the shadow of the frames, not of the stack. */
static inline void gl_san_frames_abandoned(void)
{
#if GL_ASAN
    __asan_handle_no_return();
#endif
}

/* ---- valgrind: known stacks ---------------------------------------------- */

/* [lo, hi) is a stack from now on; returns valgrind's id for it (0 when
 * not built for valgrind, or not running under it).  valgrind's range is
 * inclusive and must hold every value of the stack pointer, and a new
 * goroutine starts with sp == hi: a stack pointer outside every known stack
 * would be taken for a frame of the stack it came from, and the memory in
 * between marked as that frame's (uninitialised). */
static inline unsigned gl_vg_stack_register(uintptr_t lo, uintptr_t hi)
{
#if GL_VALGRIND
    return VALGRIND_STACK_REGISTER(lo, hi);
#else
    (void)lo; (void)hi;
    return 0;
#endif
}

/* The stack registered as `id` is about to be unmapped. */
static inline void gl_vg_stack_deregister(unsigned id)
{
#if GL_VALGRIND
    VALGRIND_STACK_DEREGISTER(id);
#else
    (void)id;
#endif
}

/* Below the stack pointer, the bytes memcheck keeps addressable (the
 * x86-64 ABI's red zone; AArch64 has none, and marking more is harmless). */
#define GL_VG_REDZONE 128

/* Code is about to run on the stack at sp, in memory memcheck holds for
 * dead (see the top): the red zone below sp is made addressable; as the
 * stack pointer then goes down, memcheck marks the rest itself. */
static inline void gl_vg_stack_enter(uintptr_t sp)
{
#if GL_VALGRIND
    VALGRIND_MAKE_MEM_UNDEFINED((void *)(sp - GL_VG_REDZONE), GL_VG_REDZONE);
#else
    (void)sp;
#endif
}

/* The runtime reads [lo, lo + len), dead stack memory, on purpose: memcheck
 * is told that it is addressable and holds what the dead frames left. */
static inline void gl_vg_dead_stack_read(uintptr_t lo, size_t len)
{
#if GL_VALGRIND
    VALGRIND_MAKE_MEM_DEFINED((void *)lo, len);
#else
    (void)lo; (void)len;
#endif
}

#endif /* GOLOOP_SANITIZER_H */
