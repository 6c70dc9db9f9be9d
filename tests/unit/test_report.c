// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of `faultline report`'s C side (src/report/): the line parser
 * (escapes, numbers, every kind of malformed input), records and their field
 * checks, the reader (line numbers, cut lines, long lines, strict mode), the
 * aggregation (its sums hold however the time axis was rebuilt, the kept
 * intervals are the slowest plus a sample, lanes are bounded, percentiles are
 * within their stated error), the memory map and the HTML writer's escaping.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "html.h"
#include "memmap.h"
#include "recording.h"
#include "rjson.h"

/* What the tracer prints for one fault (src/trace/output.c), verbatim. */
#define FAULT_LINE                                                                          \
	"{\"event\":\"fault\",\"pid\":4492,\"tid\":4497,\"comm\":\"uffd-workload\","        \
	"\"addr\":\"0x7efc9aff8000\",\"uffd\":3,\"mode\":\"missing\",\"start_ns\":226020748623," \
	"\"latency_ns\":550218,\"notify_ns\":148187,\"resolve_ns\":315690,\"wake_ns\":53950,"  \
	"\"run_ns\":32391,\"resolved_by\":\"copy\",\"vcpu\":null,\"blocked\":true,"           \
	"\"user_fault\":true,\"retries\":0,\"handler_pid\":4492,\"page_size\":4096,"          \
	"\"waiting\":false}"

static int parse(struct rj_doc *d, const char *text, char *buf, size_t len)
{
	snprintf(buf, len, "%s", text);
	return rj_parse(d, buf, strlen(buf));
}

/* ---- the JSON line parser --------------------------------------------------- */

static void test_rjson_object(void **state)
{
	struct rj_doc d = { 0 };
	char buf[1024];
	uint64_t v;
	int64_t s;

	(void)state;
	assert_int_equal(parse(&d, FAULT_LINE, buf, sizeof(buf)), 0);
	assert_string_equal(rj_str(&d, rj_get(&d, 0, "event")), "fault");
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "latency_ns"), &v), 0);
	assert_int_equal(v, 550218);
	/* out of order, and back again: the search wraps around */
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "pid"), &v), 0);
	assert_int_equal(v, 4492);
	assert_string_equal(rj_str(&d, rj_get(&d, 0, "waiting")) ? "str" : "bool", "bool");
	assert_int_equal(rj_type_of(&d, rj_get(&d, 0, "blocked")), RJ_TRUE);
	assert_true(rj_null(&d, rj_get(&d, 0, "vcpu")));
	assert_int_equal(rj_get(&d, 0, "nothing"), RJ_NONE);
	assert_true(rj_null(&d, RJ_NONE));
	assert_int_equal(rj_i64(&d, rj_get(&d, 0, "tid"), &s), 0);
	assert_int_equal(s, 4497);
	/* nesting, arrays, whitespace around everything */
	assert_int_equal(parse(&d, " { \"a\" : [ 1 , {\"b\":[]} , \"x\" ] , \"c\":{} }\r", buf,
			       sizeof(buf)), 0);
	assert_int_equal(rj_type_of(&d, rj_get(&d, 0, "a")), RJ_ARR);
	assert_int_equal(d.nodes[rj_get(&d, 0, "a")].n, 3);
	assert_int_equal(rj_type_of(&d, rj_get(&d, 0, "c")), RJ_OBJ);
	rj_free(&d);
}

static void test_rjson_strings(void **state)
{
	struct rj_doc d = { 0 };
	char buf[256];
	const char *s;

	(void)state;
	assert_int_equal(parse(&d, "{\"s\":\"a\\\"b\\\\c\\/d\\n\\t\\u0041\\u00e9\\ud83d\\ude00z\","
				   "\"k\\u0065y\":1}", buf, sizeof(buf)), 0);
	s = rj_str(&d, rj_get(&d, 0, "s"));
	assert_non_null(s);
	assert_string_equal(s, "a\"b\\c/d\n\tA\xc3\xa9\xf0\x9f\x98\x80z");
	assert_int_equal(d.nodes[rj_get(&d, 0, "s")].len, strlen(s));
	/* escaped member names are decoded too */
	assert_int_not_equal(rj_get(&d, 0, "key"), RJ_NONE);
	/* raw bytes above 0x7f pass as they are */
	assert_int_equal(parse(&d, "{\"s\":\"\xff\xfe\"}", buf, sizeof(buf)), 0);
	assert_string_equal(rj_str(&d, rj_get(&d, 0, "s")), "\xff\xfe");
	rj_free(&d);
}

static void test_rjson_numbers(void **state)
{
	struct rj_doc d = { 0 };
	char buf[256];
	uint64_t v;
	int64_t s;

	(void)state;
	assert_int_equal(parse(&d, "{\"max\":18446744073709551615,\"over\":18446744073709551616,"
				   "\"neg\":-1,\"min\":-9223372036854775808,\"under\":-9223372036854775809,"
				   "\"frac\":1.5,\"exp\":1e3,\"zero\":0,\"nz\":-0}", buf, sizeof(buf)), 0);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "max"), &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "over"), &v), -ERANGE);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "neg"), &v), -EINVAL);
	assert_int_equal(rj_i64(&d, rj_get(&d, 0, "neg"), &s), 0);
	assert_int_equal(s, -1);
	assert_int_equal(rj_i64(&d, rj_get(&d, 0, "min"), &s), 0);
	assert_true(s == INT64_MIN);
	assert_int_equal(rj_i64(&d, rj_get(&d, 0, "under"), &s), -ERANGE);
	assert_int_equal(rj_i64(&d, rj_get(&d, 0, "max"), &s), -ERANGE);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "frac"), &v), -EINVAL);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "exp"), &v), -EINVAL);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "zero"), &v), 0);
	assert_int_equal(rj_u64(&d, rj_get(&d, 0, "event"), &v), -EINVAL);	/* absent */
	rj_free(&d);
}

/* Each malformed line is refused with a reason naming the problem. */
static void test_rjson_malformed(void **state)
{
	static const struct { const char *text, *why; } bad[] = {
		{ "", "empty line" },
		{ "   ", "empty line" },
		{ "[1,2]", "not a JSON object" },
		{ "hello", "not a JSON object" },
		{ "{\"a\":1", "object not closed" },
		{ "{\"a\":\"xyz", "string not closed" },
		{ "{\"a\":\"xyz\\", "string not closed" },
		{ "{\"a\":", "value missing" },
		{ "{\"a\" 1}", "expected ':'" },
		{ "{a:1}", "expected a member name" },
		{ "{\"a\":1,}", "expected a member name" },
		{ "{\"a\":[1,]}", "unexpected character ']'" },
		{ "{\"a\":1 \"b\":2}", "expected ',' or '}'" },
		{ "{\"a\":01}", "leading zero" },
		{ "{\"a\":-}", "a number without digits" },
		{ "{\"a\":1.}", "no digits after a decimal point" },
		{ "{\"a\":1e}", "no digits in an exponent" },
		{ "{\"a\":tru}", "unknown word" },
		{ "{\"a\":nul}", "unknown word" },
		{ "{\"a\":\"\\q\"}", "invalid escape '\\q'" },
		{ "{\"a\":\"\\u12\"}", "four hex digits" },
		{ "{\"a\":\"\\ud800\"}", "without its low half" },
		{ "{\"a\":\"\\ud800\\u0041\"}", "without its low half" },
		{ "{\"a\":\"\\udc00\"}", "lone low surrogate" },
		{ "{\"a\":\"x\ty\"}", "control character 0x09" },
		{ "{} x", "text after the end" },
		{ "{}{}", "text after the end" },
		{ "{\"a\":123456789012345678901234567890123456789012345678901234567890123456789}",
		  "more than 64 characters" },
	};
	struct rj_doc d = { 0 };
	char buf[256];

	(void)state;
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse(&d, bad[i].text, buf, sizeof(buf));

		if (rc != -EINVAL || !strstr(d.err, bad[i].why))
			fail_msg("'%s': rc %d, error '%s' (want '%s')", bad[i].text, rc, d.err,
				 bad[i].why);
	}
	/* a NUL byte inside a line */
	memcpy(buf, "{\"a\":\"x\0y\"}", 11);
	assert_int_equal(rj_parse(&d, buf, 11), -EINVAL);
	assert_non_null(strstr(d.err, "control character 0x00"));
	assert_int_equal(d.errpos, 7);
	rj_free(&d);
}

static void test_rjson_limits(void **state)
{
	struct rj_doc d = { 0 };
	char *buf = malloc(4 * RJ_MAX_NODES + 16);
	size_t n = 0;

	(void)state;
	assert_non_null(buf);
	/* nesting: 32 levels parse, 33 do not (and nothing recurses deeper) */
	for (int depth = 32; depth <= 33; depth++) {
		n = 0;
		buf[n++] = '{';
		for (int i = 1; i < depth; i++)
			n += (size_t)sprintf(buf + n, "\"a\":{");
		for (int i = 0; i < depth; i++)
			buf[n++] = '}';
		assert_int_equal(rj_parse(&d, buf, n), depth == 32 ? 0 : -E2BIG);
	}
	assert_non_null(strstr(d.err, "nested deeper"));
	/* 10000 levels of arrays: refused at the limit, no stack overflow */
	n = (size_t)sprintf(buf, "{\"a\":");
	memset(buf + n, '[', 10000);
	assert_int_equal(rj_parse(&d, buf, n + 10000), -E2BIG);
	/* too many values on one line */
	n = (size_t)sprintf(buf, "{\"a\":[");
	for (unsigned i = 0; i < RJ_MAX_NODES; i++) {
		buf[n++] = '0';
		buf[n++] = ',';
	}
	buf[n++] = '0';
	buf[n++] = ']';
	buf[n++] = '}';
	assert_int_equal(rj_parse(&d, buf, n), -E2BIG);
	assert_non_null(strstr(d.err, "values on one line"));
	rj_free(&d);
	free(buf);
}

/* ---- records ------------------------------------------------------------------ */

static int line(struct rj_doc *d, const char *text, struct rp_record *rec, char *why)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf), "%s", text);
	why[0] = 0;
	return rp_parse_line(d, buf, strlen(buf), rec, why, 160);
}

static void test_record_fault(void **state)
{
	struct rj_doc d = { 0 };
	struct rp_record rec = { 0 };
	char why[160];

	(void)state;
	assert_int_equal(line(&d, FAULT_LINE, &rec, why), 1);
	assert_int_equal(rec.kind, RP_FAULT);
	assert_int_equal(rec.fault.pid, 4492);
	assert_int_equal(rec.fault.tid, 4497);
	assert_string_equal(rec.fault.comm, "uffd-workload");
	assert_true(rec.fault.addr == 0x7efc9aff8000ull);
	assert_int_equal(rec.fault.start, 226020748623ull);
	assert_int_equal(rec.fault.latency, 550218);
	assert_int_equal(rec.fault.notify, 148187);
	assert_int_equal(rec.fault.resolve, 315690);
	assert_int_equal(rec.fault.wake, 53950);
	assert_int_equal(rec.fault.run, 32391);
	assert_int_equal(rec.fault.res, FL_RES_COPY);
	assert_int_equal(rec.fault.mode, FL_FAULT_MISSING);
	assert_int_equal(rec.fault.vcpu, -1);
	assert_int_equal(rec.fault.page_size, 4096);
	assert_false(rec.fault.waiting);
	/* nulls are "not seen"; a vCPU; a name this build does not know */
	assert_int_equal(line(&d, "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":5,"
			      "\"latency_ns\":7,\"notify_ns\":null,\"resolved_by\":\"teleport\","
			      "\"mode\":\"minor\",\"vcpu\":3,\"waiting\":true}", &rec, why), 1);
	assert_true(rec.fault.notify == RP_NONE && rec.fault.resolve == RP_NONE);
	assert_int_equal(rec.fault.res, RP_RES_OTHER);
	assert_string_equal(rp_res_name(rec.fault.res), "other");
	assert_int_equal(rec.fault.mode, FL_FAULT_MINOR);
	assert_int_equal(rec.fault.vcpu, 3);
	assert_true(rec.fault.waiting);
	rp_record_free(&rec);
	rj_free(&d);
}

/* A known record with a missing or mistyped field is malformed, and says which field. */
static void test_record_field_errors(void **state)
{
	static const struct { const char *text, *why; } bad[] = {
		{ "{\"event\":\"fault\",\"pid\":1,\"start_ns\":1,\"latency_ns\":1}", "tid missing" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":null,\"start_ns\":1,\"latency_ns\":1}",
		  "tid is null" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":\"x\"}",
		  "latency_ns is not a non-negative integer" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":99999999999999999999999,"
		  "\"latency_ns\":1}", "start_ns out of range" },
		{ "{\"event\":\"fault\",\"pid\":4294967296,\"tid\":2,\"start_ns\":1,\"latency_ns\":1}",
		  "pid out of range" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":18446744073709551615,"
		  "\"latency_ns\":1}", "past 2^64-1" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":1,"
		  "\"addr\":\"0xzz\"}", "addr is not a 64-bit hex address" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":1,"
		  "\"addr\":\"0x10000000000000000\"}", "addr is not a 64-bit hex address" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":1,"
		  "\"vcpu\":1.5}", "vcpu is not a 32-bit integer" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":1,"
		  "\"comm\":7}", "comm is not a string" },
		{ "{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1,\"latency_ns\":1,"
		  "\"waiting\":1}", "waiting is not true or false" },
		{ "{\"event\":\"race\",\"ts_ns\":1}", "kind missing" },
		{ "{\"event\":\"summary\",\"faults\":1,\"resolved_by\":[]}",
		  "resolved_by is not an object" },
		{ "{\"event\":\"vm_stats\",\"pid\":1,\"vcpus\":[1]}", "vcpus[0] is not an object" },
		{ "{\"event\":\"vm_stats\",\"pid\":1,\"vcpus\":[{\"tid\":1,\"faults\":1,"
		  "\"blocked_ns\":1,\"latency_dist_us\":[1,2,\"x\"]}]}", "latency_dist_us[2]" },
		{ "{\"event\":\"lost\",\"ts_ns\":1}", "count missing" },
	};
	struct rj_doc d = { 0 };
	struct rp_record rec = { 0 };
	char why[160];

	(void)state;
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = line(&d, bad[i].text, &rec, why);

		if (rc != -EINVAL || !strstr(why, bad[i].why))
			fail_msg("'%s': rc %d, '%s' (want '%s')", bad[i].text, rc, why, bad[i].why);
	}
	rp_record_free(&rec);
	rj_free(&d);
}

static void test_record_kinds(void **state)
{
	struct rj_doc d = { 0 };
	struct rp_record rec = { 0 };
	char why[160];

	(void)state;
	assert_int_equal(line(&d, "READY pid=4492 uffd=3", &rec, why), 0);
	assert_int_equal(line(&d, "", &rec, why), 0);
	assert_int_equal(line(&d, "{\"foo\":1}", &rec, why), 1);
	assert_int_equal(rec.kind, RP_OTHER);
	assert_int_equal(line(&d, "{\"event\":\"wl_fault\",\"x\":[1]}", &rec, why), 1);
	assert_int_equal(rec.kind, RP_OTHER);
	assert_int_equal(line(&d, "{\"event\":\"summary\",\"duration_ns\":140880021,\"faults\":64,"
			      "\"races\":0,\"lost\":2,\"blocks\":64,\"resolved_by\":{\"unresolved\":0,"
			      "\"copy\":16,\"zeropage\":16,\"continue\":0,\"poison\":16,\"move\":0,"
			      "\"wake\":16,\"writeprotect\":0,\"new\":3}}", &rec, why), 1);
	assert_int_equal(rec.kind, RP_SUMMARY);
	assert_int_equal(rec.summary.faults, 64);
	assert_int_equal(rec.summary.lost, 2);
	assert_int_equal(rec.summary.by_res[FL_RES_COPY], 16);
	assert_int_equal(rec.summary.by_res[RP_RES_OTHER], 3);
	assert_int_equal(line(&d, "{\"event\":\"vm_stats\",\"ts_ns\":1,\"pid\":7,\"comm\":\"qemu\","
			      "\"vcpus\":[{\"vcpu\":0,\"tid\":8,\"faults\":2,\"blocked_ns\":30,"
			      "\"avg_latency_ns\":15,\"latency_dist_us\":[2],\"exits\":{\"HLT\":5,"
			      "\"IO\":6}}],\"non_vcpu\":{\"faults\":1,\"blocked_ns\":4,"
			      "\"latency_dist_us\":[1]},\"all_vcpu_blocked_ns\":30,"
			      "\"all_vcpu_lower_bound\":false,\"total_blocked_ns\":34}", &rec, why), 1);
	assert_int_equal(rec.kind, RP_VMSTATS);
	assert_int_equal(rec.vm.nvcpus, 1);
	assert_int_equal(rec.vm.vcpus[0].tid, 8);
	assert_int_equal(rec.vm.vcpus[0].lat.buckets[0], 2);
	assert_int_equal(rec.vm.vcpus[0].nexits, 2);
	assert_string_equal(rec.vm.vcpus[0].exits[1].name, "IO");
	assert_int_equal(rec.vm.nonvcpu.faults, 1);
	assert_int_equal(rec.vm.all_vcpu_blocked_ns, 30);
	assert_int_equal(line(&d, "{\"event\":\"poison\",\"kind\":\"sigbus\",\"ts_ns\":9,\"pid\":1,"
			      "\"tid\":2,\"comm\":\"x\",\"vcpu\":null,\"addr\":\"0x1018\","
			      "\"si_code\":\"BUS_ADRERR\"}", &rec, why), 1);
	assert_int_equal(rec.kind, RP_POISON);
	assert_true(rec.poison.addr == 0x1018);
	assert_string_equal(rec.poison.detail, "BUS_ADRERR");
	rp_record_free(&rec);
	rj_free(&d);
}

/* ---- the reader ------------------------------------------------------------------ */

static void test_reader(void **state)
{
	static char text[] =
		"Tracing userfaults...\n"
		FAULT_LINE "\n"
		"{\"event\":\"fault\",\"pid\":1\n"				/* line 3: cut short */
		"garbage line\n"
		"{\"event\":\"lost\",\"ts_ns\":5,\"where\":\"ringbuf\",\"count\":2}\n"
		"{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"start_ns\":1e9,\"latency_ns\":1}\n"
		"\n"
		"{\"event\":\"summary\",\"faults\":1";				/* line 8: no newline */
	FILE *f = fmemopen(text, strlen(text), "r");
	struct rp_reader r;
	struct rp_record rec = { 0 };
	int kinds[RP_NKINDS] = { 0 }, rc;

	(void)state;
	assert_non_null(f);
	assert_int_equal(rp_reader_init(&r, f, false), 0);
	while ((rc = rp_reader_next(&r, &rec)) > 0)
		kinds[rec.kind]++;
	assert_int_equal(rc, 0);
	assert_int_equal(kinds[RP_FAULT], 1);
	assert_int_equal(kinds[RP_LOST], 1);
	assert_int_equal(r.lines, 8);
	assert_int_equal(r.foreign, 2);
	assert_int_equal(r.malformed, 3);
	assert_int_equal(r.skips[0].line, 3);
	assert_non_null(strstr(r.skips[0].why, "not closed"));
	assert_int_equal(r.skips[1].line, 6);
	assert_non_null(strstr(r.skips[1].why, "start_ns is not a non-negative integer"));
	assert_int_equal(r.skips[2].line, 8);
	assert_non_null(strstr(r.skips[2].why, "the last line, without a newline"));
	rp_reader_free(&r);
	fclose(f);

	/* strict: the first malformed line is the error, with its number */
	f = fmemopen(text, strlen(text), "r");
	assert_int_equal(rp_reader_init(&r, f, true), 0);
	while ((rc = rp_reader_next(&r, &rec)) > 0)
		;
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(r.err, "line 3: "));
	rp_reader_free(&r);
	fclose(f);
	rp_record_free(&rec);
}

/* A line beyond RP_MAX_LINE is skipped whole (newline or not), the next one is read. */
static void test_reader_long_line(void **state)
{
	size_t big = 3 * (size_t)RP_MAX_LINE, n = 0;
	char *text = malloc(big + RP_MAX_LINE + 3 * sizeof(FAULT_LINE) + 64);
	struct rp_reader r;
	struct rp_record rec = { 0 };
	FILE *f;
	int faults = 0, rc;

	(void)state;
	assert_non_null(text);
	n += (size_t)sprintf(text, "%s\n", FAULT_LINE);
	text[n++] = '{';
	memset(text + n, 'x', big);
	n += big;
	text[n++] = '\n';
	n += (size_t)sprintf(text + n, "%s\n{\"a\":\"", FAULT_LINE);
	memset(text + n, 'y', RP_MAX_LINE + 10);	/* the last line: too long and no newline */
	n += RP_MAX_LINE + 10;
	f = fmemopen(text, n, "r");
	assert_int_equal(rp_reader_init(&r, f, false), 0);
	while ((rc = rp_reader_next(&r, &rec)) > 0)
		faults += rec.kind == RP_FAULT;
	assert_int_equal(rc, 0);
	assert_int_equal(faults, 2);
	assert_int_equal(r.lines, 4);
	assert_int_equal(r.malformed, 2);
	assert_int_equal(r.skips[0].line, 2);
	assert_non_null(strstr(r.skips[0].why, "longer than"));
	assert_int_equal(r.skips[1].line, 4);
	assert_int_equal(r.bytes, n);
	rp_reader_free(&r);
	fclose(f);
	free(text);
}

/* ---- aggregation ------------------------------------------------------------------ */

static struct rp_agg *agg_new(uint32_t max_intervals)
{
	struct rp_agg *a = calloc(1, sizeof(*a));
	struct rp_opts o = { .max_intervals = max_intervals };

	assert_non_null(a);
	assert_int_equal(rp_agg_init(a, &o), 0);
	return a;
}

static void agg_done(struct rp_agg *a)
{
	rp_agg_free(a);
	free(a);
}

static void add_fault(struct rp_agg *a, uint32_t tid, uint64_t start, uint64_t lat, unsigned res,
		      uint64_t addr, int32_t vcpu)
{
	struct rp_record rec = { .kind = RP_FAULT };

	rec.fault = (struct rp_fault){ .pid = 100, .tid = tid, .start = start, .latency = lat,
				       .notify = lat / 4, .resolve = lat / 2, .wake = RP_NONE,
				       .run = RP_NONE, .res = (uint8_t)res, .addr = addr,
				       .vcpu = vcpu };
	snprintf(rec.fault.comm, sizeof(rec.fault.comm), vcpu >= 0 ? "CPU %d/KVM" : "thr", vcpu);
	assert_int_equal(rp_agg_add(a, &rec), 0);
}

/* Per-bin sums equal the totals, however often the axis was widened or moved. */
static void check_sums(struct rp_agg *a, uint64_t faults, uint64_t blocked)
{
	uint64_t n = 0, b = 0, h = 0;

	for (uint32_t l = 0; l <= RP_MAX_LANES; l++)
		for (uint32_t i = 0; a->lanes[l].cells && i < RP_NBINS; i++) {
			n += a->lanes[l].cells[i].n;
			for (int r = 0; r < RP_NRES; r++)
				b += a->lanes[l].cells[i].blocked[r];
		}
	for (uint32_t i = 0; i < RP_NBINS; i++)
		for (int k = 0; k < FL_LAT_BUCKETS; k++)
			h += a->heat[i][k];
	assert_int_equal(a->faults, faults);
	assert_int_equal(n, faults);
	assert_int_equal(h, faults);
	assert_int_equal(a->blocked_ns, blocked);
	assert_int_equal(b, blocked);
}

static void test_agg_axis(void **state)
{
	struct rp_agg *a = agg_new(50);
	uint64_t blocked = 0, n = 0, rng = 12345;

	(void)state;
	/* close together first (fine bins), then ever wider apart, then before the first */
	for (uint64_t i = 0; i < 2000; i++, n++) {
		uint64_t start = 1000000000ull + i * i * i * 37, lat = 1000 + (i % 50) * 997;

		add_fault(a, (uint32_t)(i % 5), start, lat, (unsigned)(i % RP_NRES), 0x10000 + i * 4096,
			  -1);
		blocked += lat;
	}
	for (uint64_t i = 0; i < 500; i++, n++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		add_fault(a, 7, 1000000000ull - (rng >> 40), 12345, FL_RES_COPY, 0x10000, -1);
		blocked += 12345;
	}
	/* one wait longer than the whole window */
	add_fault(a, 8, 5, 1ull << 40, FL_RES_WAKE, 0x20000, -1);
	blocked += 1ull << 40;
	n++;
	check_sums(a, n, blocked);
	assert_true(a->axis.tmin == 5);
	assert_true(((a->axis.tmax >> a->axis.shift) - a->axis.base) < RP_NBINS);
	assert_true(a->axis.tmin >> a->axis.shift >= a->axis.base);
	agg_done(a);
}

static void test_agg_intervals(void **state)
{
	struct rp_agg *a = agg_new(100);
	struct rp_iv *v;
	uint32_t n, slowest;

	(void)state;
	/* all are kept while they fit */
	for (uint64_t i = 0; i < 60; i++)
		add_fault(a, 1 + (uint32_t)(i % 3), 1000 + i * 100000, 1000 + (i * 7919) % 10007,
			  FL_RES_COPY, 0x1000, -1);
	v = rp_agg_intervals(a, &n, &slowest);
	assert_int_equal(n, 60);
	assert_int_equal(slowest, 0);
	free(v);
	/* then the 50 slowest and a sample of 50 */
	for (uint64_t i = 60; i < 10000; i++)
		add_fault(a, 1 + (uint32_t)(i % 3), 1000 + i * 100000, 1000 + (i * 7919) % 10007,
			  FL_RES_COPY, 0x1000, -1);
	v = rp_agg_intervals(a, &n, &slowest);
	assert_non_null(v);
	assert_int_equal(slowest, 50);
	assert_true(n >= 50 && n <= 100);
	/* the 50 slowest latencies of all: 1000 + (i*7919 % 10007) is largest for ... */
	{
		uint64_t lat[10000], nslow = 0, cut;

		for (uint64_t i = 0; i < 10000; i++)
			lat[i] = 1000 + (i * 7919) % 10007;
		/* sort descending by hand (insertion of the top 50 is enough) */
		for (int k = 0; k < 50; k++)
			for (uint64_t i = (uint64_t)k + 1; i < 10000; i++)
				if (lat[i] > lat[k]) {
					uint64_t t = lat[i];

					lat[i] = lat[k];
					lat[k] = t;
				}
		cut = lat[49];
		for (uint32_t i = 0; i < n; i++)
			nslow += v[i].f.latency >= cut;
		assert_true(nslow >= 50);
	}
	/* sorted by lane then start, each fault once */
	for (uint32_t i = 1; i < n; i++) {
		assert_true(v[i - 1].lane < v[i].lane ||
			    (v[i - 1].lane == v[i].lane && v[i - 1].f.start <= v[i].f.start));
		for (uint32_t k = 0; k < i; k++)
			assert_true(v[k].seq != v[i].seq);
	}
	free(v);
	agg_done(a);
	/* none at all */
	a = agg_new(0);
	add_fault(a, 1, 1000, 5, FL_RES_COPY, 0x1000, -1);
	v = rp_agg_intervals(a, &n, &slowest);
	assert_null(v);
	assert_int_equal(n, 0);
	agg_done(a);
}

static void test_agg_lanes(void **state)
{
	struct rp_agg *a = agg_new(10);

	(void)state;
	for (uint32_t t = 0; t < RP_MAX_LANES + 50; t++) {
		add_fault(a, 1000 + t, 5000 + t, 10, FL_RES_COPY, 0x1000, t < 4 ? (int32_t)t : -1);
		add_fault(a, 1000 + t, 9000 + t, 10, FL_RES_COPY, 0x1000, -1);
	}
	assert_int_equal(a->nlanes, RP_MAX_LANES + 1);
	assert_int_equal(a->lanes[RP_MAX_LANES].threads, 50);
	assert_int_equal(a->lanes[RP_MAX_LANES].faults, 100);
	assert_int_equal(a->tids.n, RP_MAX_LANES + 50);
	assert_int_equal(a->lanes[2].vcpu, 2);
	assert_int_equal(a->lanes[5].vcpu, -1);
	assert_int_equal(rp_agg_lane_find(a, 100, 1003), 3);
	assert_int_equal(rp_agg_lane_find(a, 100, 1000 + RP_MAX_LANES + 3), RP_MAX_LANES);
	assert_int_equal(rp_agg_lane_find(a, 100, 7), -1);
	check_sums(a, 2 * (RP_MAX_LANES + 50), 20 * (RP_MAX_LANES + 50));
	agg_done(a);
}

static int u64_cmp(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

static void test_qhist(void **state)
{
	static uint64_t v[100000];
	struct rp_qhist *h = calloc(1, sizeof(*h));
	static const double qs[] = { 0.0, 0.5, 0.9, 0.99, 0.999, 1.0 };
	struct rp_agg *a = agg_new(0);
	uint64_t rng = 99;

	(void)state;
	assert_non_null(h);
	/* latencies through the aggregator's own path: mostly < 5 ms, a tenth far longer */
	for (int i = 0; i < 100000; i++) {
		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		v[i] = (rng >> 33) % 5000000 + (i % 10 == 0 ? (rng >> 20) : 0);
		add_fault(a, 1, 1000 + (uint64_t)i * 10000000, v[i], FL_RES_COPY, 0x1000, -1);
	}
	*h = a->part[RP_LAT];
	agg_done(a);
	qsort(v, 100000, sizeof(v[0]), u64_cmp);
	assert_int_equal(h->n, 100000);
	assert_true(h->min == v[0] && h->max == v[99999]);
	for (unsigned i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
		uint64_t rank = (uint64_t)ceil(qs[i] * 100000), exact = v[rank ? rank - 1 : 0];
		uint64_t got = rp_qhist_quantile(h, qs[i]);

		if (fabs((double)got - (double)exact) > 0.016 * (double)exact + 1)
			fail_msg("q %.3f: %llu, exact %llu", qs[i], (unsigned long long)got,
				 (unsigned long long)exact);
	}
	free(h);
}

static void test_agg_vms_computed(void **state)
{
	struct rp_agg *a = agg_new(10);
	struct rp_vm *v;
	uint32_t n;

	(void)state;
	/* two vCPUs blocked together for [150, 200) */
	add_fault(a, 11, 100, 100, FL_RES_COPY, 0x1000, 0);
	add_fault(a, 12, 150, 100, FL_RES_COPY, 0x2000, 1);
	add_fault(a, 13, 100, 1000, FL_RES_COPY, 0x3000, -1);
	v = rp_agg_vms(a, &n);
	assert_non_null(v);
	assert_int_equal(n, 1);
	assert_true(v[0].computed);
	assert_int_equal(v[0].nvcpus, 2);
	assert_int_equal(v[0].all_vcpu_blocked_ns, 50);
	assert_int_equal(v[0].nonvcpu.faults, 1);
	assert_int_equal(v[0].total_blocked_ns, 1200);
	rp_agg_free_vms(v, n);
	agg_done(a);
}

/* ---- the memory map ------------------------------------------------------------------ */

static void test_memmap(void **state)
{
	struct rp_memmap m;
	struct rp_mm_region *r;
	uint32_t n, dropped;
	uint64_t total = 0;

	(void)state;
	assert_int_equal(rp_mm_init(&m), 0);
	/* two regions 1 GiB apart, a poisoned page, a long raced range, a stuck waiter */
	for (uint64_t i = 0; i < 100; i++)
		assert_int_equal(rp_mm_fault(&m, 7, 0x7f0000000000ull + i * 4096, 1000 + i, 0), 0);
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(rp_mm_fault(&m, 7, 0x7f0040000000ull + i * 4096, 5000 + i,
					     i == 3 ? RP_MM_STUCK : 0), 0);
	assert_int_equal(rp_mm_mark(&m, 7, 0x7f0000005000ull, 4096, RP_MM_POISON), 0);
	assert_int_equal(rp_mm_mark(&m, 7, 0x7f0000010000ull, 1 << 20, RP_MM_RACE), 0);
	assert_int_equal(m.nranges, 1);
	assert_int_equal(rp_mm_regions(&m, 48, 40000, &r, &n, &dropped), 0);
	assert_int_equal(n, 2);
	assert_int_equal(dropped, 0);
	assert_true(r[0].start == 0x7f0000000000ull);
	assert_int_equal(r[0].cell_shift, 12);
	assert_int_equal(r[0].faults, 100);
	assert_int_equal(r[1].faults, 10);
	assert_true(r[0].flags & RP_MM_POISON);
	assert_true(r[0].flags & RP_MM_RACE);
	assert_true(r[1].flags & RP_MM_STUCK);
	for (uint32_t c = 0; c < r[0].n; c++) {
		uint64_t addr = r[0].start + ((uint64_t)r[0].cells[c].idx << 12);

		assert_int_equal(!!(r[0].cells[c].flags & RP_MM_POISON), addr == 0x7f0000005000ull);
		assert_int_equal(!!(r[0].cells[c].flags & RP_MM_RACE),
				 addr >= 0x7f0000010000ull && addr < 0x7f0000110000ull);
		if (r[0].cells[c].count)
			assert_int_equal(r[0].cells[c].first, 1000 + ((addr - r[0].start) >> 12));
	}
	rp_mm_free_regions(r, n);
	/* past RP_MM_MAX_UNITS distinct pages the unit grows; no fault is lost */
	for (uint64_t i = 0; i < RP_MM_MAX_UNITS + 1000; i++)
		assert_int_equal(rp_mm_fault(&m, 8, 0x100000000ull + i * 4096 * 3, i, 0), 0);
	assert_true(m.shift > 12);
	assert_true(m.n <= RP_MM_MAX_UNITS);
	assert_int_equal(rp_mm_regions(&m, 48, 40000, &r, &n, &dropped), 0);
	for (uint32_t i = 0; i < n; i++)
		total += r[i].faults;
	assert_int_equal(total, 110 + RP_MM_MAX_UNITS + 1000);
	rp_mm_free_regions(r, n);
	/* more processes than regions: the ones with fewest faults are left out */
	for (uint32_t p = 0; p < 60; p++)
		assert_int_equal(rp_mm_fault(&m, 1000 + p, 0x1000, 1, 0), 0);
	assert_int_equal(rp_mm_regions(&m, 48, 40000, &r, &n, &dropped), 0);
	assert_int_equal(n, 48);
	assert_int_equal(dropped, 14);
	rp_mm_free_regions(r, n);
	rp_mm_free(&m);
}

/* ---- the HTML writer -------------------------------------------------------------- */

static void test_json_str(void **state)
{
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	static const char s[] = "a\"\\</script><!--&\n\xc3\xa9\xf0\x9f\x98\x80\xff\xc3";

	(void)state;
	rp_json_str(f, s, sizeof(s) - 1);
	fclose(f);
	assert_string_equal(out, "\"a\\\"\\\\\\u003c/script\\u003e\\u003c!--\\u0026\\u000a\\u00e9"
				 "\\ud83d\\ude00\\ufffd\\ufffd\"");
	free(out);
}

/* A thread named like markup, in a whole report: nothing of it reaches the page as markup. */
static void test_html_hostile_names(void **state)
{
	static char text[] =
		"{\"event\":\"fault\",\"pid\":1,\"tid\":2,\"comm\":\"</script><script>x()\","
		"\"start_ns\":10,\"latency_ns\":5,\"resolved_by\":\"copy\"}\n"
		"{\"event\":\"race\",\"kind\":\"<img src=x>\",\"ts_ns\":12,\"pid\":1,\"what\":\"]]>\"}\n";
	FILE *in = fmemopen(text, strlen(text), "r"), *f;
	struct rp_reader r;
	struct rp_record rec = { 0 };
	struct rp_agg *a = agg_new(100);
	struct rp_meta m = { .title = "t <b>", .source = "</script>", .rd = &r };
	char *out = NULL, *data, *end;
	size_t len = 0;

	(void)state;
	assert_int_equal(rp_reader_init(&r, in, true), 0);
	while (rp_reader_next(&r, &rec) > 0)
		assert_int_equal(rp_agg_add(a, &rec), 0);
	f = open_memstream(&out, &len);
	assert_int_equal(rp_html_write(f, a, &m), 0);
	fclose(f);
	assert_non_null(strstr(out, "<title>t &lt;b&gt;</title>"));
	data = strstr(out, "<script id=\"fl-data\" type=\"application/json\">");
	assert_non_null(data);
	end = strstr(data, "</script>");
	assert_non_null(end);
	/* the data island ends at its own closing tag, and holds no '<' at all */
	assert_true(memchr(data + 45, '<', (size_t)(end - data - 45)) == NULL);
	/* (comm holds 15 characters, as the kernel's does) */
	assert_non_null(strstr(data, "\"comm\":\"\\u003c/script\\u003e\\u003cscrip\""));
	free(out);
	rp_record_free(&rec);
	rp_reader_free(&r);
	fclose(in);
	agg_done(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rjson_object),
		cmocka_unit_test(test_rjson_strings),
		cmocka_unit_test(test_rjson_numbers),
		cmocka_unit_test(test_rjson_malformed),
		cmocka_unit_test(test_rjson_limits),
		cmocka_unit_test(test_record_fault),
		cmocka_unit_test(test_record_field_errors),
		cmocka_unit_test(test_record_kinds),
		cmocka_unit_test(test_reader),
		cmocka_unit_test(test_reader_long_line),
		cmocka_unit_test(test_agg_axis),
		cmocka_unit_test(test_agg_intervals),
		cmocka_unit_test(test_agg_lanes),
		cmocka_unit_test(test_qhist),
		cmocka_unit_test(test_agg_vms_computed),
		cmocka_unit_test(test_memmap),
		cmocka_unit_test(test_json_str),
		cmocka_unit_test(test_html_hostile_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
