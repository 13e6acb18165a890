/*
 * request.h: parse_request, the parser of a control request, one line of
 * JSON: {"v":1,"op":"...", ...}. It needs no other part of the monitor (a
 * fuzz target links it alone).
 */
#ifndef PIER_REQUEST_H
#define PIER_REQUEST_H

#include <stddef.h>

/* The longest op kept; a longer one is no operation the monitor knows. */
#define REQ_OP_MAX 32
/* The JSON values (tokens) parsed at most: a request of the monitor's own
 * needs fewer than 20; of a larger one (an exec, which the monitor hands
 * over unread) only its prefix is looked at. */
#define REQ_TOKENS 128

enum req_result {
	REQ_COMPLETE, /* a whole, valid line: every field below is known */
	REQ_PARTIAL,  /* no newline yet, valid so far: what the prefix holds is known */
	REQ_ERROR,    /* not a valid request: err says why */
};

struct request {
	size_t len; /* REQ_COMPLETE: the line's length, its newline included */
	/* "v": an integer (missing or null: have_v is 0) */
	int have_v;
	long v;
	/* "op": a string, unescaped (missing or null: have_op is 0) */
	int have_op;
	char op[REQ_OP_MAX];
	/* "attach": {"stdin", "stdout", "stderr"}, booleans */
	int attach_stdin, attach_stdout, attach_stderr;
	/* The line holds more values than REQ_TOKENS: only v and op of its
	 * prefix are known (REQ_PARTIAL, or REQ_ERROR for a whole line). */
	int prefix_only;
	char err[96]; /* REQ_ERROR: why */
};

/* parse_request parses the request at the start of buf (len bytes, the
 * line up to and including its newline, or the part of it received so
 * far). It looks up keys among the top-level object's only, unescapes
 * strings (surrogate pairs included; a lone surrogate or \u0000 in op is
 * an error), takes an integer v only, and ignores unknown keys. A key
 * given twice is an error. It fills out (from a prefix: what the prefix
 * holds) and returns an enum req_result. */
int parse_request(const char *buf, size_t len, struct request *out);

/* json_unescape decodes the body of a JSON string (between its quotes,
 * n bytes) into out, as snprintf: at most size - 1 bytes and a NUL. It
 * returns the whole decoded length (size or more: out holds it cut), or -1
 * when the string is invalid (a bad escape, a control character, a lone
 * surrogate, \u0000). */
long json_unescape(const char *p, size_t n, char *out, size_t size);

#endif
