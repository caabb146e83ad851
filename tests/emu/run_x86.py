"""Runs a freestanding x86-64 program on Bochs' emulated CPU with extra
CPUID features, for kernels this machine cannot run (AVX512-FP16 here).

    python run_x86.py --shim SHIM.so --features avx512fp16 PROGRAM.elf

PROGRAM is a static ELF without a C library (tests/emu/f16_avx512.c): its
entry point takes a report buffer in rdi, fills it and stops at int3. The
report: a magic word, a case count, then per case m, n, k, blocks,
outputs, differing outputs (int32) and the first differing output and its
reference (float). Prints one line per case and "N passed, N failed";
exits 1 on any failure, on an exception before the report is done, or
when the emulator cannot be set up.

Bochs comes from bochscpu-python 0.4.0 (PyPI), built against a newer glibc
than Debian 12's: SHIM supplies the two C23 symbols it wants
(tests/emu/glibc_shim.c). Its CPU is a Tiger Lake (AVX-512 without FP16);
Bochs' own cpu.add_features parameter adds the features, set here through
the parameter object the library exports, before the CPU is made.
"""

import argparse
import ctypes
import glob
import os
import struct
import sys

EMU_DONE = 0x46313644
REPORT, STACK = 0x10000000, 0x20000000
REPORT_SIZE, STACK_SIZE = 1 << 16, 1 << 20
CASE = struct.Struct("<6i2f")


def fail(msg):
    print(f"run_x86: {msg}", flush=True)
    print("0 passed, 1 failed", flush=True)
    os._exit(1)


def set_features(bochscpu, features):
    """Sets Bochs' cpu.add_features before the CPU exists. The parameter is
    a bx_param_string_c made with room for its empty default only, so its
    value pointer (+0x70) and size (+0x6c, as its set() reads them) are
    pointed at a buffer of ours; then read back through get()."""
    lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(bochscpu.__file__), "_bochscpu*.so"))[0])
    lib.sim_get_param_string.restype = ctypes.c_void_p
    p = lib.sim_get_param_string(b"cpu.add_features")
    if not p:
        fail("no cpu.add_features parameter in this bochscpu")
    buf = ctypes.create_string_buffer(features.encode(), 256)
    ctypes.c_int.from_address(p + 0x6C).value = 256
    ctypes.c_void_p.from_address(p + 0x70).value = ctypes.addressof(buf)
    get = lib._ZN17bx_param_string_c3getEPci
    get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    back = ctypes.create_string_buffer(256)
    get(p, back, 256)
    if back.value != features.encode():
        fail(f"cpu.add_features reads back {back.value!r}, not {features!r}")
    return buf


def load(bochscpu, elf):
    """Maps the ELF's PT_LOAD segments, the report and a stack, user
    read-write-execute, identity-free: guest pages get physical pages in
    order. Returns (cr3, entry, the page table: it owns the host pages
    of its levels, so it must outlive the run)."""
    mem = bochscpu.memory
    page = mem.page_size()
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or struct.unpack_from("<H", elf, 18)[0] != 62:
        fail("not an x86-64 ELF")
    entry, phoff = struct.unpack_from("<QQ", elf, 0x18)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    table = mem.PageMapLevel4Table()
    mapped, segs = {}, []
    next_gpa = [0x100000]

    def map_range(va, size):
        for p in range(va & ~(page - 1), (va + size + page - 1) & ~(page - 1), page):
            if p not in mapped:
                hva, gpa = mem.allocate_host_page(), next_gpa[0]
                next_gpa[0] += page
                mem.page_insert(gpa, hva)
                table.insert(p, gpa, 1)  # 1: writable
                mapped[p] = gpa

    for i in range(phnum):
        kind, _, off, va, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
        if kind == 1:
            map_range(va, memsz)
            segs.append((va, elf[off : off + filesz] + bytes(memsz - filesz)))
    map_range(REPORT, REPORT_SIZE)
    map_range(STACK - STACK_SIZE, STACK_SIZE)
    cr3 = 0x8000000
    for hva, gpa in table.commit(cr3):
        mem.page_insert(gpa, hva)
    for va, data in segs:
        if not mem.virt_write(cr3, va, list(data)):
            fail(f"cannot write the segment at {va:#x}")
    return cr3, entry, table


def run(bochscpu, cr3, entry):
    """Runs from entry(REPORT) in 64-bit user mode, SSE, AVX and AVX-512
    state enabled, until the first exception (int3 at the end)."""
    sess = bochscpu.Session()

    def missing_page(gpa):
        raise RuntimeError(f"missing page {gpa:#x}")

    sess.missing_page_handler = missing_page
    st = bochscpu.State()
    bochscpu.cpu.set_long_mode(st)
    st.cr0 = (st.cr0 | 0x2) & ~0x4  # MP set, EM clear: x87/SSE usable
    st.cr4 = st.cr4 | 1 << 9 | 1 << 10 | 1 << 18  # OSFXSR, OSXMMEXCPT, OSXSAVE
    st.xcr0 = 0xE7  # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
    st.mxcsr = 0x1F80
    st.cr3 = cr3
    st.rip, st.rsp, st.rdi = entry, STACK - 72, REPORT  # as after a call: rsp + 8 aligned
    cs = bochscpu.Segment()
    cs.present, cs.selector, cs.base, cs.limit, cs.attr = True, 0x33, 0, 0xFFFFFFFF, 0x22FB
    ds = bochscpu.Segment()
    ds.present, ds.selector, ds.base, ds.limit, ds.attr = True, 0x2B, 0, 0xFFFFFFFF, 0xCF3
    st.cs = cs
    st.ds = st.ss = st.es = st.fs = st.gs = ds
    sess.cpu.state = st
    stop = {}

    def exception(s, cpu, vector, code):
        stop.update(vector=vector, code=code)
        s.stop()

    hook = bochscpu.Hook()
    hook.exception = exception
    sess.run([hook])
    return stop, sess.cpu.rip


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shim", required=True)
    ap.add_argument("--features", default="avx512fp16")
    ap.add_argument("program")
    args = ap.parse_args()
    ctypes.CDLL(os.path.abspath(args.shim), mode=ctypes.RTLD_GLOBAL)
    import bochscpu
    import bochscpu.cpu
    import bochscpu.memory

    features = set_features(bochscpu, args.features)  # kept alive: Bochs reads it
    with open(args.program, "rb") as f:
        cr3, entry, table = load(bochscpu, f.read())
    stop, rip = run(bochscpu, cr3, entry)
    head = bytes(bochscpu.memory.virt_read(cr3, REPORT, 8))
    magic, ncases = struct.unpack("<II", head)
    if magic != EMU_DONE or ncases > 64:
        fail(f"stopped before the report was done: exception {stop} near rip {rip:#x}")
    body = bytes(bochscpu.memory.virt_read(cr3, REPORT + 8, ncases * CASE.size))
    passed = failed = 0
    for i in range(ncases):
        m, n, k, blocks, outputs, differ, got, want = CASE.unpack_from(body, i * CASE.size)
        what = f"m {m:3d} n {n:3d} k {k:4d}{' in blocks' if blocks else ''}"
        if differ:
            failed += 1
            print(f"FAIL {what}: {differ} of {outputs} outputs differ from the reference "
                  f"(first: {got!r}, reference {want!r})")
        else:
            passed += 1
            print(f"ok   {what}: {outputs} outputs, the reference's bits")
    print(f"{passed} passed, {failed} failed", flush=True)
    os._exit(1 if failed or not passed else 0)  # nanobind's teardown is noisy


if __name__ == "__main__":
    main()
