/* What skiff-box's files share: exit statuses, options, error reporting. */
#pragma once

#include <signal.h>
#include <stddef.h>

#include "../lib/error.h"
#include "../lib/macros.h"
#include "../runtime/runtime.h"

#define EXIT_USAGE       2
#define EXIT_TIMEOUT     124
#define EXIT_RUNTIME     125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND   127
#define EXIT_KILLED      137
#define DEFAULT_DATA_DIR "/var/lib/skiff"
#define SKIFF_VERSION    "0.1.0"

/* Signals skiff-box passes on to what it runs. */
extern const int FORWARDED[];
extern const size_t NFORWARDED;

struct options {
	struct spec spec;
	const char *instance;
	const char *data_dir;
	const char *report;
	int detach;
	enum rt_disk_backend disk_backend;
};

/* Frees what the spec holds on every return from main (ASan's leak check runs at exit). */
void options_release(struct options *o);
/* Parse the run options (and --instance, --data); returns the index of the first argument. */
int parse_options(int argc, char **argv, struct options *o);
/* One line on stderr, exit status 2. */
_Noreturn void die_usage(const char *fmt, ...) _printf_(1, 2);
/* The exit status that reports err. */
int exit_code_for(const struct sk_error *err);
/* rt_disk_setup with skiff-box's reporting: a fallback to tmpfs is logged on stderr. Returns
 * 0, or the exit status (> 0) after reporting the failure. */
int disk_setup(struct rt *rt, const char *data_dir, enum rt_disk_backend backend, int make);
/* The exit status of a process that ended with this wait status: its code, or 128+N. */
int exit_code_of_status(int status);

/* Subcommands (skiff_box_manage.c). */
int cmd_gc(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_ls(int argc, char **argv);
