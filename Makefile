# mpdet - one non-recursive Makefile.
#   make              bootstrap (packages + model), then build everything
#                     (the CUDA backend too when nvcc is found)
#   make CUDA=0       CPU-only build
#   make demo         README command 1: detect objects in darknet's sample photos
#   make test         README command 2: unit, parity and end-to-end tests
#   make bench        speed and memory beside the peers (never fails on speed)
#   make data         the calibration and evaluation image sets (build/data)
#   make paper        the paper's tables and figures: docs/results.md
#   make test SANITIZE=address,undefined
BUILD    ?= build
PREFIX   ?= /usr/local
CC       ?= cc
# nvcc from PATH, else the toolkit's usual place.
NVCC     ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc),nvcc)
CUDA     ?= $(if $(shell command -v $(NVCC) 2>/dev/null),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(shell command -v $(NVCC) 2>/dev/null)))
# Real code for each architecture listed, PTX for the last (newest), which
# the driver compiles for GPUs newer than any listed. 87 = Jetson Orin.
# The original Jetson Nano: make CUDA_ARCH=53 with its CUDA 10.2 toolkit.
CUDA_ARCH ?= 75 80 86 87 89 90
# The machine the compiler builds for (a cross compiler's target, e.g.
# CC=aarch64-linux-gnu-gcc); uname -m before the bootstrap installed one.
MACHINE  := $(or $(shell $(CC) -dumpmachine 2>/dev/null),$(shell uname -m))
OPT      ?= -O3 -march=x86-64-v2
ifeq ($(filter x86_64 x86_64-%,$(MACHINE)),)
OPT      := -O3
endif

# Recursive (=) on purpose: pkg-config runs when a recipe needs the flags,
# after the bootstrap has installed the packages.
# OpenBLAS: its header only; host/cpu/blas.c loads the library at run time
# (so that it can choose the kernels; see blas.h).
PKGS      := openblas stb jansson
PKG_CFLAGS = $(patsubst -I%,-isystem %,$(shell pkg-config --cflags $(PKGS)))
PKG_LIBS   = $(shell pkg-config --libs stb jansson)
CPPFLAGS += -Ihost $(PKG_CFLAGS) -MMD -MP
# No errno from math functions and no FP traps: we use neither, and both
# block vectorisation of the float loops (lrintf, ternary clamps).
CFLAGS   += -std=c11 $(OPT) -fno-math-errno -fno-trapping-math -g -Wall -Wextra -Werror -fPIC
# oneDNN (x86 int8 GEMM) when its header is there and the compiler finds the
# library (a cross compiler does not find the host's). gemm_i8.c checks only
# the header, so it is told -DMPD_NO_DNNL when the library is missing.
DNNL_LIBS  = $(if $(wildcard /usr/include/dnnl.h),$(if $(filter /%,$(shell $(CC) -print-file-name=libdnnl.so)),-ldnnl))
CPPFLAGS += $(if $(wildcard /usr/include/dnnl.h),$(if $(DNNL_LIBS),,-DMPD_NO_DNNL))
LDLIBS   += $(PKG_LIBS) $(DNNL_LIBS) -lm -lpthread -ldl
ifdef SANITIZE
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=$(SANITIZE)
# stb_image 2.27's known shift by 32 on corrupt JPEG data (host/image.c
# says why it is harmless and cannot be refused first).
$(BUILD)/host/image.o: CFLAGS += -fno-sanitize=shift
endif

HOST_SRC := host/mpd.c host/cfg.c host/net.c host/yolo.c host/image.c host/engine.c \
            host/backend_registry.c host/plan.c host/calib.c host/cpu/cpu_backend.c host/cpu/conv_f32.c \
            host/cpu/layers_f32.c host/cpu/tpool.c host/cpu/half_cpu.c host/cpu/conv_i8.c \
            host/cpu/gemm_i8.c host/cpu/gemm_f16.c host/cpu/gemm_f16_x86.c host/cpu/gemm_tiles.c \
            host/cpu/conv_dnnl.c host/cpu/blas.c host/overflow.c \
            host/calib_search.c
HOST_OBJ := $(HOST_SRC:%.c=$(BUILD)/%.o)
CUDA_SRC := cuda/im2col.cu cuda/quant.cu cuda/gemm_dp4a.cu cuda/gemm_f16.cu cuda/act.cu \
            cuda/pool.cu cuda/upsample.cu cuda/yolo.cu cuda/preprocess.cu
ifeq ($(CUDA),1)
HOST_OBJ += $(BUILD)/cuda/cuda_backend.o $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CPPFLAGS += -DMPD_HAVE_CUDA=1
# cuBLAS is not linked: cuda_backend.c loads it when a GPU backend opens.
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -ldl -lstdc++
endif
NVCC_GENCODE = $(foreach a,$(CUDA_ARCH),-gencode arch=compute_$(a),code=sm_$(a)) \
               -gencode arch=compute_$(lastword $(CUDA_ARCH)),code=compute_$(lastword $(CUDA_ARCH))
# Device code: C-like CUDA C++ behind extern "C" launchers; the host side
# of every .cu file builds with the same warnings as our C, as errors.
NVCCFLAGS ?= -O3 -std=c++14 $(NVCC_GENCODE) -Xcompiler -fPIC,-Wall,-Wextra,-Werror \
             --Werror all-warnings
LIB      := $(BUILD)/libmpdet.a

TOOLS    := $(BUILD)/mpdet $(BUILD)/mpdetd
DAEMON_SRC := daemon/main.c daemon/mpdetd.c daemon/http.c daemon/queue.c daemon/reload.c daemon/listen.c \
              daemon/log.c daemon/config.c daemon/multipart.c daemon/metrics.c daemon/notify.c \
              daemon/framing.c daemon/stream.c
DAEMON_OBJ := $(DAEMON_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(BUILD)/tests/test_cfg $(BUILD)/tests/test_weights $(BUILD)/tests/test_layers \
            $(BUILD)/tests/test_image $(BUILD)/tests/test_yolo $(BUILD)/tests/test_engine \
            $(BUILD)/tests/test_half $(BUILD)/tests/test_calib $(BUILD)/tests/test_plan \
            $(BUILD)/tests/test_quant $(BUILD)/tests/test_mixed $(BUILD)/tests/test_gemm_i8 \
            $(BUILD)/tests/test_gemm_f16 \
            $(BUILD)/tests/test_daemon_config $(BUILD)/tests/test_multipart \
            $(BUILD)/tests/test_metrics $(BUILD)/tests/test_backend_parity \
            $(BUILD)/tests/test_accuracy $(BUILD)/tests/test_tune $(BUILD)/tests/test_overflow \
            $(BUILD)/tests/test_framing
# Linked against Debian's libdarknet, the reference implementation.
DARKNET_DIR := /usr/lib/darknet
PARITY   := $(BUILD)/tests/test_darknet_parity
BENCH    := $(BUILD)/bench/bench_forward $(BUILD)/bench/darknet_forward \
            $(BUILD)/bench/bench_gemm_i8 $(BUILD)/bench/bench_dnnl_conv
BENCH_GPU := $(BUILD)/bench/bench_gpu

all: $(LIB) $(TOOLS)

# Every compile waits for the bootstrap (order-only: it does not force
# rebuilds). The bootstrap is quick and silent when nothing is missing.
$(BUILD)/%.o: %.c | bootstrap
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# cuda_backend.c is host C (-Werror) over the CUDA runtime and cuBLAS C APIs.
$(BUILD)/cuda/cuda_backend.o: CPPFLAGS += -isystem $(CUDA_HOME)/include
$(BUILD)/cuda/%.o: cuda/%.cu cuda/kernels.h cuda/kernels_util.cuh host/quant.h host/half.h | bootstrap
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -Ihost -c $< -o $@
# The letterbox must round every float operation as the C code does (no
# fused multiply-add), so the GPU's input tensor is bit-identical.
$(BUILD)/cuda/preprocess.o: NVCCFLAGS += --fmad=false

$(LIB): $(HOST_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

TOOL_OBJ := $(BUILD)/tools/mpdet.o $(BUILD)/tools/client.o $(BUILD)/tools/common.o \
            $(BUILD)/tools/experiments.o $(BUILD)/tools/chart.o $(BUILD)/tools/accuracy.o \
            $(BUILD)/tools/tune.o
$(BUILD)/mpdet: $(TOOL_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The daemon sees the engine only through host/engine.h (-Ihost), plus
# internal.h's mpd__fail in its parsers, and its own headers; libevent
# (evhttp) is linked here and nowhere else.
$(BUILD)/daemon/%.o: CPPFLAGS += -Idaemon $(shell pkg-config --cflags libevent_pthreads)
$(BUILD)/mpdetd: $(DAEMON_OBJ) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) $$(pkg-config --libs libevent libevent_pthreads) -o $@

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(BUILD)/tests/testutil.o $(LIB)
	$(CC) $(LDFLAGS) $(filter-out $(LIB),$^) $(LIB) $(LDLIBS) -lcmocka -o $@

# Unit tests of the daemon's own modules.
$(BUILD)/tests/test_daemon_config.o $(BUILD)/tests/test_multipart.o \
$(BUILD)/tests/test_metrics.o: CPPFLAGS += -Idaemon
$(BUILD)/tests/test_daemon_config: $(BUILD)/daemon/config.o
$(BUILD)/tests/test_multipart: $(BUILD)/daemon/multipart.o
$(BUILD)/tests/test_metrics: $(BUILD)/daemon/metrics.o
# The framing check works on libevent's evbuffers.
$(BUILD)/tests/test_framing.o: CPPFLAGS += -Idaemon $(shell pkg-config --cflags libevent)
$(BUILD)/tests/test_framing: $(BUILD)/daemon/framing.o
$(BUILD)/tests/test_framing: LDLIBS += $(shell pkg-config --libs libevent)
# Unit tests of the mpdet tool's pure modules (accuracy metric, tuner).
$(BUILD)/tests/test_accuracy.o $(BUILD)/tests/test_tune.o: CPPFLAGS += -Itools
$(BUILD)/tests/test_accuracy: $(BUILD)/tools/accuracy.o
$(BUILD)/tests/test_tune: $(BUILD)/tools/tune.o

# The CUDA backend on the CUDA emulation of tests/cuda_emu: the kernels as
# host C++ (each launch rewritten into a call), cuda_backend.c against the
# emulated runtime and cuBLAS, so its logic and kernels run in every test
# run, GPU or not. Built whether or not nvcc exists.
EMU      := $(BUILD)/emu
CXX      ?= g++
EMU_CXXFLAGS := -std=c++14 -O2 -g -ffp-contract=off -Wall -Wextra -Werror -Wno-unused-function \
                -Wno-unknown-pragmas
EMU_OBJ  := $(CUDA_SRC:cuda/%.cu=$(EMU)/%.o) $(EMU)/emu.o $(EMU)/cuda_backend.o \
            $(EMU)/backend_registry.o
ifdef SANITIZE
# Kernels under the sanitizers too: emulated device memory is heap memory,
# so an out-of-bounds access in a kernel is caught here.
EMU_CXXFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
endif
HOST_CPU_OBJ := $(filter-out $(BUILD)/host/backend_registry.o,$(HOST_SRC:%.c=$(BUILD)/%.o))
$(EMU)/%.cc: cuda/%.cu
	@mkdir -p $(@D)
	sed -E 's/([A-Za-z_][A-Za-z_0-9]*(<[A-Za-z_0-9]+>)?)<<<(.*)>>>\(/mpd_emu::launcher(\1, \3)(/' $< >$@
$(EMU)/%.o: $(EMU)/%.cc cuda/kernels.h cuda/kernels_util.cuh tests/cuda_emu/cuda_runtime.h \
            tests/cuda_emu/cuda_runtime_api.h tests/cuda_emu/cuda_fp16.h host/quant.h host/half.h \
            | bootstrap
	$(CXX) $(EMU_CXXFLAGS) -Itests/cuda_emu -Icuda -Ihost -c $< -o $@
$(EMU)/emu.o: tests/cuda_emu/emu.cc tests/cuda_emu/cuda_runtime.h tests/cuda_emu/cublas_v2.h \
              tests/cuda_emu/cuda_runtime_api.h | bootstrap
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -Itests/cuda_emu -Ihost -c $< -o $@
$(EMU)/cuda_backend.o $(EMU)/backend_registry.o $(EMU)/test_backend_parity.o: \
    CPPFLAGS += -Itests/cuda_emu -DMPD_HAVE_CUDA=1 -DMPD_CUDA_EMU=1
$(EMU)/cuda_backend.o: cuda/cuda_backend.c | bootstrap
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(EMU)/backend_registry.o: host/backend_registry.c | bootstrap
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
$(EMU)/test_backend_parity.o: tests/test_backend_parity.c | bootstrap
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
EMU_TEST := $(BUILD)/tests/test_backend_parity_emu
$(EMU_TEST): $(EMU)/test_backend_parity.o $(BUILD)/tests/testutil.o $(EMU_OBJ) $(HOST_CPU_OBJ)
	$(CC) $(LDFLAGS) $^ $(filter-out -lcudart,$(LDLIBS)) -lcmocka -lstdc++ -o $@

# darknet's header is not C11-clean; compile the oracle side with its own flags.
$(BUILD)/tests/darknet_ref.o: tests/darknet_ref.c | bootstrap
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -I$(DARKNET_DIR)/include -std=gnu11 $(OPT) -g -Wall -c $< -o $@
$(PARITY): $(BUILD)/tests/test_darknet_parity.o $(BUILD)/tests/darknet_ref.o \
           $(BUILD)/tests/testutil.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -lcmocka -L$(DARKNET_DIR) -ldarknet \
	    -Wl,-rpath,$(DARKNET_DIR) -o $@

$(BUILD)/bench/bench_forward: $(BUILD)/bench/bench_forward.o $(BUILD)/bench/benchutil.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/bench/bench_gpu: $(BUILD)/bench/bench_gpu.o $(BUILD)/bench/benchutil.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/bench/bench_gemm_i8: $(BUILD)/bench/bench_gemm_i8.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@
# oneDNN's convolutions beside ours (issue 13); bench/run runs it without ours
# (--no-ours), for what the int8 target can reach through oneDNN. OpenMP
# for omp_set_num_threads: Debian's oneDNN runs on libgomp. Without oneDNN
# it builds to a program that says so.
$(BUILD)/bench/bench_dnnl_conv.o: CFLAGS += -fopenmp
$(BUILD)/bench/bench_dnnl_conv: $(BUILD)/bench/bench_dnnl_conv.o $(BUILD)/bench/benchutil.o $(LIB)
	$(CC) $(LDFLAGS) -fopenmp $^ $(LDLIBS) -o $@
$(BUILD)/bench/darknet_forward: $(BUILD)/bench/darknet_forward.o $(BUILD)/bench/benchutil.o \
                             $(BUILD)/tests/darknet_ref.o
	$(CC) $(LDFLAGS) $^ -L$(DARKNET_DIR) -ldarknet -Wl,-rpath,$(DARKNET_DIR) -lm -o $@

bootstrap:
	@scripts/bootstrap

# Regenerates config/yolov3-tiny.calib (committed, so plans work out of the
# box) from the calibration set of `make data`, with the auto method.
calibration: all data
	$(BUILD)/mpdet calibrate --images $(BUILD)/data/calib.txt --method auto \
	    -o config/yolov3-tiny.calib

demo: all
	@BUILD=$(BUILD) scripts/demo

# The image corpus of the accuracy tools (outside git): calibration and
# evaluation sets with a manifest, from the Debian packages' photos and videos.
data: bootstrap
	@scripts/make-data $(BUILD)/data

# The paper's experiments on the evaluation set: docs/results.md and its charts.
paper: all data
	@BUILD=$(BUILD) scripts/paper

# No silent skips: tests/run fails on any skip that tests/skips.allowed does
# not allow on this machine, and runs test_backend_parity_emu with
# MPDET_REQUIRE_CUDA=1 (its emulated device must be found, not skipped).
test: all $(TESTS) $(PARITY) $(EMU_TEST)
	@BUILD=$(BUILD) tests/run $(TESTS) $(EMU_TEST) $(PARITY) tests/test_cli.sh \
	    tests/test_experiments.sh tests/test_daemon.py tests/test_daemon_faults.py \
	    tests/test_daemon_claims.py tests/test_daemon_scale.py \
	    tests/test_deploy.py tests/test_units.sh tests/test_systemd.sh

install: all
	@BUILD=$(BUILD) scripts/install --prefix "$(PREFIX)" --destdir "$(DESTDIR)"

# data: the calibration images of the int8 peers' models (4 s once).
bench: all data $(BENCH)
	@bench/run

# The CUDA backend on this machine's GPU: parity with the CPU backend, the
# end-to-end tests on the CUDA backend, compute-sanitizer when present.
# MPDET_REQUIRE_CUDA=1 there: tests/skips.allowed's only skip left is
# test_device_out_of_memory (it needs the emulated device's memory limit).
test-gpu: all $(TESTS) $(PARITY)
	@BUILD=$(BUILD) scripts/test-gpu

# GPU speed and memory per preset and batch size, beside PyTorch.
bench-gpu: all $(BENCH_GPU)
	@bench/run-gpu

# The unit test programs alone (scripts/test-sanitize builds them).
tests: $(TESTS)

# The unit and daemon tests under ASan + UBSan, the daemon's under TSan.
test-sanitize: bootstrap
	@scripts/test-sanitize

# The CPU backend and its unit tests cross-built for aarch64 (build-arm64/)
# and run under qemu-user; detections compared with this machine's build.
test-arm64: all
	@X86_BUILD=$(BUILD) scripts/test-arm64

# The fp16 GEMM's AVX512-FP16 kernel on an emulated CPU that has it (Bochs,
# from PyPI into $(BUILD)/emu-venv), bit for bit against its reference.
test-avx512fp16: bootstrap
	@BUILD=$(BUILD) scripts/test-avx512fp16

# The fp16 path in half arithmetic on x86 with a stand-in for the
# AVX512-FP16 GEMM (bench/f16-standin), on CPUs without it: the per-layer
# choice between it and oneDNN, and the mixes of the two, tested (CI);
# and its speed, as an estimate of the real kernel's.
test-f16-standin: bootstrap
	@bench/f16-standin test

bench-f16-standin: bootstrap
	@bench/f16-standin bench

# libFuzzer targets (clang) of every parser, each for FUZZ_SECONDS (CI: 30).
FUZZ_SECONDS ?= 30
fuzz: bootstrap
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz

# The daemon under a long mixed load with reloads (CI: 60 s).
SOAK_SECONDS ?= 300
soak: all
	@BUILD=$(BUILD) SOAK_SECONDS=$(SOAK_SECONDS) scripts/soak

clean:
	rm -rf $(BUILD)

.PHONY: all test bench clean bootstrap demo calibration install test-gpu bench-gpu data paper \
        fuzz soak tests test-sanitize test-arm64 test-avx512fp16 test-f16-standin bench-f16-standin
# Keep intermediate objects (tests/*.o): no 'rm' lines after the test summary.
.SECONDARY:
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
