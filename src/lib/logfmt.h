/* One logfmt line per event, for the daemons (library code never logs: it returns errors). */
#pragma once

#include <stdarg.h>

#include "macros.h"

#define LOGFMT_LINE_BYTES 2048

/* "time=<RFC 3339> <prefix><fmt…>" handed to sink (a line without its newline), or written to
 * stderr when sink is NULL. prefix may be "" ("component=worker " for instance). */
void logfmt_vline(void (*sink)(const char *line), const char *prefix, const char *fmt, va_list ap);
