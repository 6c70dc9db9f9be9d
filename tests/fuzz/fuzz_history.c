// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the history socket's two parsers (src/exporter/history.c):
 * the daemon reads a request line from whoever connects, the stuck client
 * reads answer lines from the daemon.  The input's first byte picks one.
 * Properties: a request accepted is written back and parsed again to the
 * same pids (never more than asked for); nothing crashes or leaks either.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "history.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line, err[256], *out = NULL;
	pid_t pids[FL_HIST_MAX_PIDS], again[FL_HIST_MAX_PIDS];
	int n = 0, m = 0;
	size_t outlen = 0;

	if (!size)
		return 0;
	line = fuzz_line(data, size);
	if (!line)
		return 0;
	if (data[0] & 1) {
		struct fl_hist_answer a;

		memset(&a, 0, sizeof(a));
		fl_hist_answer_parse_line(&a, line);
		fl_hist_answer_free(&a);
	} else if (fl_hist_request_parse(line, pids, FL_HIST_MAX_PIDS, &n, err, sizeof(err)) == 0) {
		FILE *f = open_memstream(&out, &outlen);

		CHECK(n >= 0 && n <= FL_HIST_MAX_PIDS);
		CHECK(f);
		fl_hist_request_write(f, pids, n);
		fclose(f);
		out[strcspn(out, "\n")] = 0;
		CHECK(fl_hist_request_parse(out, again, FL_HIST_MAX_PIDS, &m, err, sizeof(err)) == 0);
		CHECK(m == n && !memcmp(pids, again, (size_t)n * sizeof(pid_t)));
		free(out);
	}
	free(line);
	return 0;
}
