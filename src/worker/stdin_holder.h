/* The stdin holder (build/bin/skiff-stdin, src/cmd/skiff_stdin.c): a small program of its own
 * that the spawner starts for an exec with a stdin pipe or a terminal, so that the pipe's write
 * end or the terminal's master stays open whatever happens to the spawner. It is exec'd rather
 * than left a fork of the spawner, which would pin a copy of the spawner's memory for as long as
 * it lives. The spawner's child sets its descriptors, session and signals, then execs it as
 * `skiff-stdin pipe|pty` with an empty environment. */
#pragma once

#define STDIN_HOLDER_NAME      "skiff-stdin" /* its file name in the binaries' directory, and comm */
#define STDIN_HOLDER_STREAM_FD 3             /* the pipe's write end, or the master */
#define STDIN_HOLDER_OUTPUT_FD 4             /* a terminal's: the stdout file its output goes to */
