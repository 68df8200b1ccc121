/* One error contract: functions return 0 (or a count) on success and a negative errno-style code
 * on failure, and fill a struct sk_error with that code and a message; callers add context on the
 * way up with sk_error_prefix(). Library code never prints: the boundary reports the error once. */
#pragma once

#include "macros.h"

#define SK_ERROR_MSG_BYTES 1024

/* Codes of our own, beyond errno values, kept negative like errnos. */
enum {
	SK_EINVAL_SPEC =
	    4096,            /* bad user input (spec, option): status 2 at the CLI, 400 over HTTP */
	SK_ECMD_EXEC = 4097, /* the command exists but could not be executed: status 126 */
	SK_ECMD_NOTFOUND = 4098, /* the command was not found: status 127 */
};

struct sk_error {
	int code; /* negative errno, or -SK_EINVAL_SPEC */
	char msg[SK_ERROR_MSG_BYTES];
};

/* Set err (if not NULL) to code and the formatted message; returns code (negative). */
int sk_error_set(struct sk_error *err, int code, const char *fmt, ...) _printf_(3, 4);
/* Like sk_error_set, appending ": strerror(-code)" to the message. */
int sk_error_errno(struct sk_error *err, int code, const char *fmt, ...) _printf_(3, 4);
/* Prepend "context: " to err's message; returns err's code. */
int sk_error_prefix(struct sk_error *err, const char *fmt, ...) _printf_(2, 3);
/* True when the error is the user's (bad input) rather than the system's. */
static inline int sk_error_is_input(const struct sk_error *err)
{
	return err->code == -SK_EINVAL_SPEC;
}
