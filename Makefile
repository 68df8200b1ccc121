# skiff: `make` builds every binary into build/bin/. `make SANITIZE=1` builds with ASan+UBSan into
# build/asan/bin/. `make unit` builds and runs the cmocka tests; `make check` runs every test.

SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build/asan
SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
STATIC_FLAGS =
else
BUILD ?= build
SAN_FLAGS =
# Static binaries start faster (no dynamic loading: ~1 ms per start on a VM) and run as they
# are on machines without our -dev packages.
STATIC_FLAGS = -static
endif

CC ?= cc
PKGS = libseccomp jansson
CFLAGS ?= -O2 -g
# What the code needs whatever CFLAGS a caller sets (`make CFLAGS=-O0` keeps these).
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-format-truncation -D_GNU_SOURCE -include src/lib/banned.h \
	  -MMD -MP -I$(BUILD)/gen -I$(LLHTTP_INC) $(SAN_FLAGS) $(shell pkg-config --cflags $(PKGS) libuv sqlite3 libcurl libarchive)
LLHTTP_INC = /usr/share/include/llhttp
LDFLAGS += $(SAN_FLAGS) -Wl,--as-needed
LDLIBS = $(shell pkg-config --libs $(PKGS))

LIB_SRC = $(wildcard src/lib/*.c) $(wildcard src/runtime/*.c) src/image/busybox.c
LIB_OBJ = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)

# The control plane (skiffd) and the client (skiff) link these too; they are dynamic binaries.
# llhttp is compiled from the C sources Debian ships in node-llhttp.
DPKGS = libuv sqlite3 libcrypto jansson libseccomp libcurl
LLHTTP_DIR = /usr/share/llhttp
LLHTTP_OBJ = $(BUILD)/obj/llhttp/llhttp.o $(BUILD)/obj/llhttp/api.o $(BUILD)/obj/llhttp/http.o
D_SRC = $(wildcard src/http/*.c) $(wildcard src/store/*.c) $(wildcard src/server/*.c) \
	$(wildcard src/worker/*.c)
D_OBJ = $(D_SRC:%.c=$(BUILD)/obj/%.o) $(LLHTTP_OBJ)
D_LDLIBS = $(shell pkg-config --libs $(DPKGS)) -lpthread

# Network egress: rtnetlink and nftables, linked by skiffd and the unit tests only (skiff-box
# is static, and Debian ships no static libmnl or libnftables).
NET_PKGS = libmnl libnftables
NET_SRC = $(wildcard src/net/*.c)
NET_OBJ = $(NET_SRC:%.c=$(BUILD)/obj/%.o)
NET_LDLIBS = $(shell pkg-config --libs $(NET_PKGS))

# The image store, builder and importers: skiffd and the unit tests (libarchive is dynamic only).
IMG_PKGS = libarchive libcrypto jansson
IMG_SRC = $(filter-out src/image/busybox.c,$(wildcard src/image/*.c))
IMG_OBJ = $(IMG_SRC:%.c=$(BUILD)/obj/%.o)
IMG_LDLIBS = $(shell pkg-config --libs $(IMG_PKGS))
CLI_SRC = src/cmd/skiff.c $(wildcard src/cmd/cli_*.c)
CLI_OBJ = $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
CLI_LDLIBS = $(shell pkg-config --libs libcurl jansson libcrypto libarchive) -lpthread

BINS = $(BUILD)/bin/skiff-box $(BUILD)/bin/skiffd $(BUILD)/bin/skiff $(BUILD)/bin/skiff-stdin
PROBE = $(BUILD)/tests/skiff-probe
IMAGE_TOOL = $(BUILD)/tests/skiff-image-tool
INIT = $(BUILD)/bin/skiff-init
INIT_SRC = src/cmd/skiff_init.c src/runtime/init_loop.c src/runtime/command.c src/runtime/msg.c \
	src/lib/sock.c src/lib/error.c \
	src/lib/fsutil.c

UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BINS) $(PROBE) $(INIT) $(IMAGE_TOOL)

# What a detached sandbox's init execs into (src/runtime/init_exe.c): static, small, never
# sanitized (it runs in every sandbox), and not readable by others, so init stays not dumpable.
$(INIT): $(INIT_SRC)
	@mkdir -p $(dir $@)
	$(CC) -static -Os -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -include src/lib/banned.h \
		$(shell pkg-config --cflags $(PKGS)) -o $@.tmp $(INIT_SRC)
	chmod 0711 $@.tmp && mv $@.tmp $@

# A static program the tests run inside sandboxes (never sanitized: it must run in any root).
$(PROBE): tests/probe/probe.c
	@mkdir -p $(dir $@)
	$(CC) -static -O2 -std=gnu11 -Wall -Wextra -Werror -o $@ $< -lpthread

# Makes images in a store for the tests, without a server.
$(IMAGE_TOOL): $(BUILD)/obj/tests/tools/image_tool.o $(BUILD)/libskiffimg.a $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(IMG_LDLIBS) $(LDLIBS)

# The seccomp profile is compiled once, at build time, into a header.
$(BUILD)/tools/gen-seccomp: tools/gen_seccomp.c $(BUILD)/obj/src/runtime/seccomp_profile.o \
		$(BUILD)/obj/src/lib/error.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gen/seccomp_bpf.h: $(BUILD)/tools/gen-seccomp
	@mkdir -p $(dir $@)
	$< > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/src/runtime/seccomp.o: $(BUILD)/gen/seccomp_bpf.h

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libskiff.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libskiffd.a: $(D_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libskiffnet.a: $(NET_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libskiffimg.a: $(IMG_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Not our code: built without our warnings and banned.h.
$(BUILD)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(SAN_FLAGS) -I$(LLHTTP_INC) -c -o $@ $<

$(BUILD)/bin/skiffd: $(BUILD)/obj/src/cmd/skiffd.o $(BUILD)/libskiffd.a $(BUILD)/libskiffnet.a \
		$(BUILD)/libskiffimg.a $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(D_LDLIBS) $(NET_LDLIBS) $(IMG_LDLIBS)

$(BUILD)/bin/skiff: $(CLI_OBJ) $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CLI_LDLIBS)

$(BUILD)/bin/skiff-box: $(BUILD)/obj/src/cmd/skiff_box.o $(BUILD)/obj/src/cmd/skiff_box_manage.o \
		$(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(STATIC_FLAGS) -o $@ $^ $(LDLIBS)

# The stdin holder skiffd's spawner runs for each exec with stdin or a terminal: small and static,
# so that each one costs little memory.
$(BUILD)/bin/skiff-stdin: $(BUILD)/obj/src/cmd/skiff_stdin.o $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(STATIC_FLAGS) -o $@ $^

# Benchmarks that link the runtime.
$(BUILD)/bench/pool_start: bench/pool_start.c $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(STATIC_FLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/disk_subvol: bench/disk_subvol.c $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $(STATIC_FLAGS) -o $@ $^ $(LDLIBS)

# Imports and the store (dynamic: libarchive).
$(BUILD)/bench/tar_layer: bench/tar_layer.c $(BUILD)/libskiffimg.a $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(IMG_LDLIBS)

$(BUILD)/bench/image_store: bench/image_store.c $(BUILD)/libskiffimg.a $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(IMG_LDLIBS) $(LDLIBS)

$(BUILD)/bench/manifest_decode: bench/manifest_decode.c $(BUILD)/libskiffimg.a $(BUILD)/libskiff.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(IMG_LDLIBS) $(LDLIBS)

bench: $(BUILD)/bench/pool_start $(BUILD)/bench/disk_subvol $(BUILD)/bench/image_store \
	$(BUILD)/bench/tar_layer $(BUILD)/bench/manifest_decode

# Unit tests may #include the .c they test to reach static functions.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libskiffd.a $(BUILD)/libskiffnet.a \
		$(BUILD)/libskiffimg.a $(BUILD)/libskiff.a | $(BUILD)/bin/skiff-stdin
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -Wno-unused-function -o $@ $< $(BUILD)/libskiffd.a \
		$(BUILD)/libskiffnet.a $(BUILD)/libskiffimg.a $(BUILD)/libskiff.a $(D_LDLIBS) \
		$(NET_LDLIBS) $(IMG_LDLIBS) \
		$(shell pkg-config --libs cmocka)

# Fuzz targets (clang's libFuzzer with ASan and UBSan): `make fuzz`, then tests/fuzz/run.sh.
FUZZ_SRC = $(IMG_SRC) $(wildcard src/lib/*.c)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_SRC)
	@mkdir -p $(dir $@)
	clang -g -O1 -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -include src/lib/banned.h \
		-fsanitize=fuzzer,address,undefined $(shell pkg-config --cflags $(IMG_PKGS)) \
		-o $@ $^ $(IMG_LDLIBS)

fuzz: $(BUILD)/fuzz/fuzz_archive

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: all
	SKIFF_BIN=$(abspath $(BUILD)/bin) /usr/bin/python3 -m pytest -q tests/integration

check: unit integration

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

.PHONY: all bench fuzz unit integration check format format-check clean
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
