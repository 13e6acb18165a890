/*
 * fuzz_request.c: libFuzzer target of the request parser (bin/fuzz-request).
 * Besides memory errors (ASan, UBSan) it checks what parse_request
 * promises: a complete request ends at the first newline; a partial one
 * has none; every prefix of a complete request is partial, and tells the
 * same v and op as the whole when it knows them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../request.h"

#define REQUIRE(c)                         \
	do {                               \
		if (!(c))                  \
			__builtin_trap();  \
	} while (0)

static void check(const char *p, size_t n, const struct request *r, int res) {
	REQUIRE(res == REQ_COMPLETE || res == REQ_PARTIAL || res == REQ_ERROR);
	REQUIRE(memchr(r->op, 0, sizeof r->op) != NULL);
	REQUIRE(memchr(r->err, 0, sizeof r->err) != NULL);
	const char *nl = memchr(p, '\n', n);
	if (res == REQ_COMPLETE) {
		REQUIRE(nl && r->len == (size_t)(nl - p) + 1);
		REQUIRE(!r->prefix_only);
	}
	if (res == REQ_PARTIAL)
		REQUIRE(!nl);
	if (res == REQ_ERROR)
		REQUIRE(r->err[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
	/* A copy of its own size, so that ASan sees any read past the end. */
	char *p = malloc(size ? size : 1);
	if (!p)
		return 0;
	memcpy(p, data, size);
	struct request r;
	int res = parse_request(p, size, &r);
	check(p, size, &r, res);
	if (res == REQ_COMPLETE) {
		size_t cuts[3] = {r.len - 1, r.len / 2, r.len > 1 ? 1 : 0};
		for (int i = 0; i < 3; i++) {
			struct request q;
			int qres = parse_request(p, cuts[i], &q);
			check(p, cuts[i], &q, qres);
			REQUIRE(qres == REQ_PARTIAL);
			if (q.have_op)
				REQUIRE(r.have_op && !strcmp(q.op, r.op));
			if (q.have_v)
				REQUIRE(r.have_v && q.v == r.v);
		}
	}
	free(p);
	return 0;
}
