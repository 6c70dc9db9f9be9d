/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A small, strict JSON parser for one line of a recording (`faultline trace
 * --json`). The records are flat objects with the odd nested one (summary's
 * resolved_by, vm_stats' vcpus), so the whole grammar is accepted, with
 * limits: 32 levels of nesting, RJ_MAX_NODES values a line. Strings are
 * decoded in place (escapes, \u with surrogate pairs, as UTF-8), so a line
 * costs no allocation but the node array, which is reused line after line.
 * Written for hostile input: every byte is checked against the end, nothing
 * recurses deeper than the limit, and an error says what and where.
 */
#ifndef FAULTLINE_RJSON_H
#define FAULTLINE_RJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RJ_NONE UINT32_MAX
#define RJ_MAX_DEPTH 32
#define RJ_MAX_NODES (1u << 18)

enum rj_type { RJ_NULL, RJ_FALSE, RJ_TRUE, RJ_NUM, RJ_STR, RJ_ARR, RJ_OBJ };

struct rj_node {
	const char *key;	/* member name in an object (decoded, NUL-terminated), else NULL */
	const char *s;		/* RJ_STR: decoded, NUL-terminated; RJ_NUM: its text, not terminated */
	uint32_t keylen, len;
	uint32_t child, next;	/* first child (RJ_ARR, RJ_OBJ) and next sibling, or RJ_NONE */
	uint32_t n;		/* number of children */
	uint8_t type;
};

/* One parsed line; node 0 is the root object. Zero-initialise, rj_free at the end. */
struct rj_doc {
	struct rj_node *nodes;
	uint32_t n, cap;
	uint32_t hint_obj, hint;	/* where the last rj_get left off (members come in order) */
	char err[96];		/* why the last rj_parse failed */
	size_t errpos;		/* and at which byte of the line (0-based) */
};

/*
 * Parses text[0..len) (modified: strings are decoded in place) as one JSON
 * object. 0, or -EINVAL (malformed: d->err, d->errpos), -E2BIG (past a
 * limit) or -ENOMEM.
 */
int rj_parse(struct rj_doc *d, char *text, size_t len);
void rj_free(struct rj_doc *d);

/*
 * The member `key` of object node obj, or RJ_NONE (a name written twice: either).
 * The search starts after the member found last and wraps around, so asking
 * for members in the order they were written costs one comparison each.
 */
uint32_t rj_get(struct rj_doc *d, uint32_t obj, const char *key);
/* A non-negative integer: 0, -EINVAL (absent, null, not an integer), -ERANGE (> UINT64_MAX). */
int rj_u64(const struct rj_doc *d, uint32_t i, uint64_t *v);
/* An integer in [INT64_MIN, INT64_MAX]: 0, -EINVAL or -ERANGE. */
int rj_i64(const struct rj_doc *d, uint32_t i, int64_t *v);
/* The decoded string of a string node, or NULL. */
const char *rj_str(const struct rj_doc *d, uint32_t i);
/* The node is absent (RJ_NONE) or null. */
bool rj_null(const struct rj_doc *d, uint32_t i);
enum rj_type rj_type_of(const struct rj_doc *d, uint32_t i);

#endif
