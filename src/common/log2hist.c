// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include "log2hist.h"

static unsigned slot_of(uint64_t v)
{
	unsigned s = 0;

	while (v && s < FL_LOG2HIST_SLOTS - 1) {
		v >>= 1;
		s++;
	}
	return s;
}

void fl_log2hist_add(struct fl_log2hist *h, uint64_t v)
{
	h->slots[slot_of(v)]++;
	h->count++;
	h->sum += v;
}

static int last_used(const struct fl_log2hist *h)
{
	int last = -1;

	for (int i = 0; i < FL_LOG2HIST_SLOTS; i++)
		if (h->slots[i])
			last = i;
	return last;
}

static uint64_t lo_of(int i)
{
	return i ? 1ULL << (i - 1) : 0;
}

static uint64_t hi_of(int i)
{
	return i ? (1ULL << i) - 1 : 0;
}

void fl_log2hist_print(FILE *out, const struct fl_log2hist *h, const char *unit)
{
	int last = last_used(h);
	uint64_t max = 0;
	const int width = 40;

	for (int i = 0; i <= last; i++)
		if (h->slots[i] > max)
			max = h->slots[i];
	fprintf(out, "%24s : count    distribution\n", unit);
	for (int i = 0; i <= last; i++) {
		int stars = max ? (int)(h->slots[i] * width / max) : 0;

		fprintf(out, "%10llu -> %-10llu : %-8llu |", (unsigned long long)lo_of(i),
			(unsigned long long)hi_of(i), (unsigned long long)h->slots[i]);
		for (int s = 0; s < width; s++)
			fputc(s < stars ? '*' : ' ', out);
		fputs("|\n", out);
	}
}

void fl_log2hist_json(FILE *out, const struct fl_log2hist *h, const char *unit)
{
	int last = last_used(h);

	fprintf(out, "{\"unit\":\"%s\",\"count\":%llu,\"sum\":%llu,\"buckets\":[", unit,
		(unsigned long long)h->count, (unsigned long long)h->sum);
	for (int i = 0; i <= last; i++)
		fprintf(out, "%s{\"lo\":%llu,\"hi\":%llu,\"count\":%llu}", i ? "," : "",
			(unsigned long long)lo_of(i), (unsigned long long)hi_of(i),
			(unsigned long long)h->slots[i]);
	fputs("]}", out);
}
