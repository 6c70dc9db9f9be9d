// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the metrics registry and Prometheus text writer
 * (src/exporter/metrics.c): bucket placement on exact boundaries (values land in the
 * first bucket whose le they do not exceed), cumulative buckets, +Inf, _sum
 * and _count, label and HELP escaping, number formatting, and the
 * cardinality cap of the limited ("process") label.
 *
 * Every check reads the rendered exposition text, as a scraper would.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static const double bounds[] = { 0.001, 0.01, 0.1 };

static char *render(struct fl_metrics *m)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(fl_metrics_write(m, f), 0);
	fclose(f);
	return buf;
}

/* The value of the sample line that starts with `series` + ' ', or NAN. */
static double sample(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, series, n) && l[n] == ' ')
			return strtod(l + n + 1, NULL);
	return NAN;
}

static int count_lines(const char *text, const char *prefix)
{
	int c = 0;
	size_t n = strlen(prefix);

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, prefix, n))
			c++;
	return c;
}

static void test_bucket_of_exact_boundaries(void **state)
{
	(void)state;
	/* on a bound: that bound's bucket (le is inclusive) */
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 0.001), 0);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 0.01), 1);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 0.1), 2);
	/* just above a bound: the next one */
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, nextafter(0.001, 1)), 1);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, nextafter(0.1, 1)), 3);
	/* just below: the same one */
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, nextafter(0.01, 0)), 1);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 0), 0);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, -1), 0);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 1e9), 3);
	assert_int_equal(fl_metrics_bucket_of(bounds, 0, 5), 0);
	/* nanoseconds as the exporter converts them: 1 ms exactly is le="0.001" */
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 1000000 / 1e9), 0);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 1000001 / 1e9), 1);
	assert_int_equal(fl_metrics_bucket_of(bounds, 3, 100000000 / 1e9), 2);
}

static void test_histogram_cumulative_inf_sum_count(void **state)
{
	struct fl_metrics *m = fl_metrics_new(NULL);
	const char *labels[] = { "resolution", NULL };
	struct fl_metric *h = fl_metrics_family(m, "t_latency_seconds", "Latency.",
						FL_METRIC_HISTOGRAM, labels, bounds, 3);
	char *text;

	(void)state;
	assert_non_null(h);
	/* 0.0005, 0.001 -> le 0.001; 0.005, 0.01 -> le 0.01; none in 0.1; 0.5, 2 -> +Inf only */
	const double obs[] = { 0.0005, 0.001, 0.005, 0.01, 0.5, 2 };
	for (unsigned i = 0; i < 6; i++)
		assert_int_equal(fl_metric_observe(h, obs[i], "copy"), 0);
	assert_int_equal(fl_metric_observe(h, 0.05, "wake"), 0);
	text = render(m);
	assert_non_null(strstr(text, "# HELP t_latency_seconds Latency.\n"
				     "# TYPE t_latency_seconds histogram\n"));
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"copy\",le=\"0.001\"}") == 2);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"copy\",le=\"0.01\"}") == 4);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"copy\",le=\"0.1\"}") == 4);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"copy\",le=\"+Inf\"}") == 6);
	assert_true(sample(text, "t_latency_seconds_count{resolution=\"copy\"}") == 6);
	assert_true(fabs(sample(text, "t_latency_seconds_sum{resolution=\"copy\"}") - 2.5165) < 1e-12);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"wake\",le=\"0.01\"}") == 0);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"wake\",le=\"0.1\"}") == 1);
	assert_true(sample(text, "t_latency_seconds_bucket{resolution=\"wake\",le=\"+Inf\"}") == 1);
	/* bucket lines in le order, +Inf last, then _sum, _count; series sorted by labels */
	const char *b1 = strstr(text, "{resolution=\"copy\",le=\"0.001\"}");
	const char *inf = strstr(text, "{resolution=\"copy\",le=\"+Inf\"}");
	const char *sum = strstr(text, "t_latency_seconds_sum{resolution=\"copy\"}");
	const char *cnt = strstr(text, "t_latency_seconds_count{resolution=\"copy\"}");
	const char *wake = strstr(text, "resolution=\"wake\"");
	assert_true(b1 < inf && inf < sum && sum < cnt && cnt < wake);
	assert_int_equal(count_lines(text, "t_latency_seconds_bucket{resolution=\"copy\""), 4);
	free(text);
	fl_metrics_free(m);
}

static void test_counter_gauge_and_formats(void **state)
{
	struct fl_metrics *m = fl_metrics_new(NULL);
	const char *labels[] = { "kind", NULL };
	struct fl_metric *c = fl_metrics_family(m, "t_things_total", "Things.", FL_METRIC_COUNTER,
						labels, NULL, 0);
	struct fl_metric *g = fl_metrics_family(m, "t_up", "Up.", FL_METRIC_GAUGE, NULL, NULL, 0);
	char buf[40], *text;

	(void)state;
	assert_non_null(c);
	assert_non_null(g);
	assert_int_equal(fl_metric_add(c, 1, "a"), 0);
	assert_int_equal(fl_metric_add(c, 2, "a"), 0);
	assert_int_equal(fl_metric_add(c, 0, "b"), 0);
	assert_int_equal(fl_metric_add(c, -1, "a"), -EINVAL);	/* counters only go up */
	assert_int_equal(fl_metric_set(c, 5, "a"), -EINVAL);
	assert_int_equal(fl_metric_observe(c, 5, "a"), -EINVAL);
	assert_int_equal(fl_metric_add(c, NAN, "a"), -EINVAL);
	assert_int_equal(fl_metric_set(g, 1), 0);
	assert_int_equal(fl_metric_set(g, -2.5), 0);
	text = render(m);
	assert_true(sample(text, "t_things_total{kind=\"a\"}") == 3);
	assert_true(sample(text, "t_things_total{kind=\"b\"}") == 0);
	assert_non_null(strstr(text, "\nt_up -2.5\n"));
	assert_non_null(strstr(text, "# TYPE t_things_total counter\n"));
	assert_non_null(strstr(text, "# TYPE t_up gauge\n"));
	free(text);
	/* numbers: shortest exact form, integers without a point, specials spelled out */
	assert_string_equal(fl_metrics_fmt_double(0.0005, buf, sizeof(buf)), "0.0005");
	assert_string_equal(fl_metrics_fmt_double(2.5, buf, sizeof(buf)), "2.5");
	assert_string_equal(fl_metrics_fmt_double(10, buf, sizeof(buf)), "10");
	assert_string_equal(fl_metrics_fmt_double(-0.0, buf, sizeof(buf)), "0");
	assert_string_equal(fl_metrics_fmt_double(INFINITY, buf, sizeof(buf)), "+Inf");
	assert_string_equal(fl_metrics_fmt_double(-INFINITY, buf, sizeof(buf)), "-Inf");
	assert_string_equal(fl_metrics_fmt_double(NAN, buf, sizeof(buf)), "NaN");
	assert_true(strtod(fl_metrics_fmt_double(0.1 + 0.2, buf, sizeof(buf)), NULL) == 0.1 + 0.2);
	/* clear: a gauge set rebuilt from scratch */
	fl_metric_clear(g);
	text = render(m);
	assert_null(strstr(text, "\nt_up "));
	free(text);
	fl_metrics_free(m);
}

static void test_escaping(void **state)
{
	struct fl_metrics *m = fl_metrics_new(NULL);
	const char *labels[] = { "process", "what", NULL };
	struct fl_metric *c = fl_metrics_family(m, "t_esc_total", "Back\\slash and\nnewline.",
						FL_METRIC_COUNTER, labels, NULL, 0);
	char *text;

	(void)state;
	assert_non_null(c);
	/* a comm may hold anything but NUL */
	assert_int_equal(fl_metric_add(c, 1, "a\"b\\c\nd", "x y{},="), 0);
	assert_int_equal(fl_metric_add(c, 1, "", "empty"), 0);
	text = render(m);
	assert_non_null(strstr(text, "# HELP t_esc_total Back\\\\slash and\\nnewline.\n"));
	assert_true(sample(text, "t_esc_total{process=\"a\\\"b\\\\c\\nd\",what=\"x y{},=\"}") == 1);
	assert_true(sample(text, "t_esc_total{process=\"\",what=\"empty\"}") == 1);
	free(text);
	/* Not UTF-8 (a process may name itself any bytes): each stray byte as
	 * \xNN; well-formed multi-byte characters kept.  Overlong, surrogate,
	 * truncated and out-of-range sequences are not well formed. */
	assert_int_equal(fl_metric_add(c, 1, "q\xff\xfe\xc3\xa9", "bad"), 0);
	assert_int_equal(fl_metric_add(c, 1, "\xc0\xaf\xed\xa0\x80\xe2\x82", "forms"), 0);
	assert_int_equal(fl_metric_add(c, 1, "\xf4\x90\x80\x80\xf0\x9f\x98\x80", "range"), 0);
	text = render(m);
	assert_true(sample(text, "t_esc_total{process=\"q\\\\xff\\\\xfe\xc3\xa9\",what=\"bad\"}") == 1);
	assert_true(sample(text, "t_esc_total{process=\"\\\\xc0\\\\xaf\\\\xed\\\\xa0\\\\x80"
			   "\\\\xe2\\\\x82\",what=\"forms\"}") == 1);
	assert_true(sample(text, "t_esc_total{process=\"\\\\xf4\\\\x90\\\\x80\\\\x80\xf0\x9f\x98\x80\","
			   "what=\"range\"}") == 1);
	/* no raw newline inside a sample line: every line is a comment or a sample */
	for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
		assert_true(l[0] == '#' || !strncmp(l, "t_esc_total{", 12));
	free(text);
	fl_metrics_free(m);
}

static void test_invalid_families(void **state)
{
	struct fl_metrics *m = fl_metrics_new(NULL);
	const char *le[] = { "le", NULL };
	const char *reserved[] = { "__name", NULL };
	const char *dup[] = { "a", "a", NULL };
	const char *bad[] = { "a-b", NULL };
	const char *five[] = { "a", "b", "c", "d", "e", NULL };
	const double unsorted[] = { 0.1, 0.01 };
	const double inf[] = { 1, INFINITY };

	(void)state;
	assert_null(fl_metrics_family(m, "1abc", "", FL_METRIC_COUNTER, NULL, NULL, 0));
	assert_null(fl_metrics_family(m, "a b", "", FL_METRIC_COUNTER, NULL, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_HISTOGRAM, le, bounds, 3));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_COUNTER, reserved, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_COUNTER, dup, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_COUNTER, bad, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_COUNTER, five, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_HISTOGRAM, NULL, unsorted, 2));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_HISTOGRAM, NULL, inf, 2));
	assert_null(fl_metrics_family(m, "t_h", "", FL_METRIC_GAUGE, NULL, bounds, 3));
	assert_non_null(fl_metrics_family(m, "t_h:ok", "", FL_METRIC_COUNTER, NULL, NULL, 0));
	assert_null(fl_metrics_family(m, "t_h:ok", "", FL_METRIC_COUNTER, NULL, NULL, 0));
	assert_int_equal(errno, EEXIST);
	fl_metrics_free(m);
}

static void test_cardinality_top_n(void **state)
{
	struct fl_metrics_cfg cfg = { .limited_label = "process", .top_n = 2 };
	struct fl_metrics *m = fl_metrics_new(&cfg);
	const char *labels[] = { "process", "mode", NULL };
	const char *hl[] = { "process", NULL };
	struct fl_metric *c = fl_metrics_family(m, "t_faults_total", "", FL_METRIC_COUNTER, labels,
						NULL, 0);
	struct fl_metric *h = fl_metrics_family(m, "t_lat_seconds", "", FL_METRIC_HISTOGRAM, hl,
						bounds, 3);
	char *text;

	(void)state;
	/* qemu 10 faults, criu 5, fc 1 (+ 1 minor): top 2 are qemu and criu */
	for (int i = 0; i < 10; i++)
		fl_metric_add(c, 1, "qemu", "missing");
	for (int i = 0; i < 5; i++)
		fl_metric_add(c, 1, "criu", "missing");
	fl_metric_add(c, 1, "fc", "missing");
	fl_metric_add(c, 1, "fc", "minor");
	fl_metrics_weigh(m, "qemu", 10);
	fl_metrics_weigh(m, "criu", 5);
	fl_metrics_weigh(m, "fc", 2);
	fl_metric_observe(h, 0.0005, "fc");
	fl_metric_observe(h, 0.05, "qemu");
	text = render(m);
	assert_true(sample(text, "t_faults_total{process=\"qemu\",mode=\"missing\"}") == 10);
	assert_true(sample(text, "t_faults_total{process=\"criu\",mode=\"missing\"}") == 5);
	assert_true(sample(text, "t_faults_total{process=\"other\",mode=\"missing\"}") == 1);
	assert_true(sample(text, "t_faults_total{process=\"other\",mode=\"minor\"}") == 1);
	assert_int_equal(count_lines(text, "t_faults_total{process=\"fc\""), 0);
	/* the same decision in every family, so they join on process */
	assert_true(sample(text, "t_lat_seconds_bucket{process=\"other\",le=\"0.001\"}") == 1);
	assert_int_equal(count_lines(text, "t_lat_seconds_count{process=\"fc\"}"), 0);
	free(text);

	/* fc overtakes criu: criu folds into other, sums stay exact */
	fl_metrics_weigh(m, "fc", 10);
	text = render(m);
	assert_true(sample(text, "t_faults_total{process=\"fc\",mode=\"missing\"}") == 1);
	assert_true(sample(text, "t_faults_total{process=\"other\",mode=\"missing\"}") == 5);
	assert_true(isnan(sample(text, "t_faults_total{process=\"other\",mode=\"minor\"}")));
	free(text);

	/* many distinct processes: never more than top_n + 1 label values, sum exact */
	for (int i = 0; i < FL_METRICS_MAX_VALUES + 50; i++) {
		char name[32];

		snprintf(name, sizeof(name), "p%d", i);
		fl_metric_add(c, 1, name, "wp");
		fl_metrics_weigh(m, name, 1);
	}
	text = render(m);
	assert_int_equal(count_lines(text, "t_faults_total{"), 2 + 1 + 2);	/* qemu, fc, other */
	assert_true(sample(text, "t_faults_total{process=\"other\",mode=\"wp\"}") ==
		    FL_METRICS_MAX_VALUES + 50);
	assert_true(sample(text, "t_faults_total{process=\"other\",mode=\"missing\"}") == 5);
	free(text);
	fl_metrics_free(m);
}

static void test_no_limited_label_families_untouched(void **state)
{
	struct fl_metrics_cfg cfg = { .limited_label = "process", .top_n = 0 };
	struct fl_metrics *m = fl_metrics_new(&cfg);
	const char *labels[] = { "kind", NULL };
	const char *pl[] = { "process", NULL };
	struct fl_metric *c = fl_metrics_family(m, "t_races_total", "", FL_METRIC_COUNTER, labels,
						NULL, 0);
	struct fl_metric *p = fl_metrics_family(m, "t_p_total", "", FL_METRIC_COUNTER, pl, NULL, 0);
	char *text;

	(void)state;
	fl_metric_add(c, 1, "a");
	fl_metric_add(c, 1, "b");
	fl_metric_add(p, 4, "x");
	fl_metric_add(p, 3, "y");
	text = render(m);
	assert_true(sample(text, "t_races_total{kind=\"a\"}") == 1);
	assert_true(sample(text, "t_races_total{kind=\"b\"}") == 1);
	/* top 0: everything is other */
	assert_true(sample(text, "t_p_total{process=\"other\"}") == 7);
	free(text);
	fl_metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket_of_exact_boundaries),
		cmocka_unit_test(test_histogram_cumulative_inf_sum_count),
		cmocka_unit_test(test_counter_gauge_and_formats),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_invalid_families),
		cmocka_unit_test(test_cardinality_top_n),
		cmocka_unit_test(test_no_limited_label_families_untouched),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
