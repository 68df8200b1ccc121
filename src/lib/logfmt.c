#include "logfmt.h"

#include <stdio.h>

#include "clock.h"

void logfmt_vline(void (*sink)(const char *line), const char *prefix, const char *fmt, va_list ap)
{
	char line[LOGFMT_LINE_BYTES], ts[RFC3339_BYTES];
	clock_format_rfc3339(clock_now_ms(), ts, sizeof(ts));
	int n = snprintf(line, sizeof(line), "time=%s %s", ts, prefix);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	if (sink)
		sink(line);
	else
		fprintf(stderr, "%s\n", line);
}
