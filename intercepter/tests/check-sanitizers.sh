#!/usr/bin/env bash
# turingwatch intercepter: the unit and stress tests under AddressSanitizer (+UBSan),
# ThreadSanitizer and valgrind.
#
# The sanitizers bring their own malloc and cannot sit behind an LD_PRELOAD allocator, so for
# them the library is compiled into the test programs (-DWI_EMBED: the hooks are called
# wi_malloc & co. and the "next" allocator is the sanitizer's).  valgrind runs the real
# preloaded library built by meson.
#
# Usage: check-sanitizers.sh WORK_DIR PRELOAD_LIBRARY [THREADS] [OPERATIONS]
# SPDX-License-Identifier: GPL-3.0-or-later
set -euo pipefail

work=${1:?usage: check-sanitizers.sh WORK_DIR PRELOAD_LIBRARY [THREADS] [OPERATIONS]}
library=${2:?usage: check-sanitizers.sh WORK_DIR PRELOAD_LIBRARY [THREADS] [OPERATIONS]}
threads=${3:-16}
operations=${4:-1000000}
here=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
mkdir -p "$work"

common=(-std=gnu11 -g -O1 -D_GNU_SOURCE -I"$here/include" -Wall -Wextra -Werror
        -fno-builtin-malloc -fno-builtin-calloc -fno-builtin-realloc -fno-builtin-free
        -ftls-model=initial-exec -pthread)
embedded=(-DWI_EMBED "$here"/src/*.c)

step() { printf '== %s\n' "$*"; }

step "build with AddressSanitizer + UBSan and with ThreadSanitizer"
for test in test_api test_stress; do
  "$cc" "${common[@]}" -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
    "${embedded[@]}" "$here/tests/$test.c" -o "$work/$test-asan" -ldl
done
"$cc" "${common[@]}" -fsanitize=thread "${embedded[@]}" "$here/tests/test_stress.c" \
  -o "$work/test_stress-tsan" -ldl
for test in test_api test_stress; do
  "$cc" "${common[@]}" "$here/tests/$test.c" -o "$work/$test-plain"
done

# allocator_may_return_null: the huge-size tests expect NULL + ENOMEM from the fallback.
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

step "AddressSanitizer: test_api"
"$work/test_api-asan" | tail -n 1
step "AddressSanitizer: test_stress $threads threads, $operations operations"
"$work/test_stress-asan" "$threads" "$operations" | tail -n 1
step "ThreadSanitizer: test_stress $threads threads, $operations operations"
"$work/test_stress-tsan" "$threads" "$operations" | tail -n 1
# nouserintercepts: valgrind replaces glibc's malloc (which we call), not ours.  test_api's first
# test fails if the program is not really using the library.
memcheck=(valgrind --quiet --error-exitcode=99 --leak-check=no --soname-synonyms=somalloc=nouserintercepts)
step "valgrind memcheck, library preloaded: test_api"
LD_PRELOAD="$library" "${memcheck[@]}" "$work/test_api-plain" | tail -n 1
step "valgrind memcheck, library preloaded: test_stress $threads threads, $operations operations"
LD_PRELOAD="$library" "${memcheck[@]}" "$work/test_stress-plain" "$threads" "$operations" | tail -n 1
step "all clean"
