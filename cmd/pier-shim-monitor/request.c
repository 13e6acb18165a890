//go:build ignore

/*
 * request.c: the parser of control requests (see request.h), on jsmn
 * (Debian's libjsmn-dev, a header-only JSON tokenizer): jsmn splits the
 * line into tokens, each with its parent; this file checks what jsmn lets
 * through (separators, primitives, control characters), finds the
 * top-level keys and decodes their values.
 *
 * (The //go:build line keeps the go tool, which builds the Go tests of this
 * directory, from taking the C files for cgo sources.)
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "protocol.h"
#include "request.h"

static int fail(struct request *r, const char *fmt, ...) {
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->err, sizeof r->err, fmt, ap);
	va_end(ap);
	return REQ_ERROR;
}

static int hexval(char c) {
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* hex4 reads the 4 hex digits at p (n bytes left), or returns -1. */
static long hex4(const char *p, size_t n) {
	if (n < 4)
		return -1;
	long v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

long json_unescape(const char *p, size_t n, char *out, size_t size) {
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i++];
		char tmp[4];
		size_t k = 0;
		if (c < 0x20)
			return -1; /* a raw control character */
		if (c != '\\') {
			tmp[k++] = c;
		} else {
			if (i >= n)
				return -1;
			char e = p[i++];
			switch (e) {
			case '"': tmp[k++] = '"'; break;
			case '\\': tmp[k++] = '\\'; break;
			case '/': tmp[k++] = '/'; break;
			case 'b': tmp[k++] = '\b'; break;
			case 'f': tmp[k++] = '\f'; break;
			case 'n': tmp[k++] = '\n'; break;
			case 'r': tmp[k++] = '\r'; break;
			case 't': tmp[k++] = '\t'; break;
			case 'u': {
				long u = hex4(p + i, n - i);
				if (u < 0)
					return -1;
				i += 4;
				if (u >= 0xdc00 && u <= 0xdfff)
					return -1; /* a low surrogate first */
				if (u >= 0xd800 && u <= 0xdbff) {
					/* A high surrogate: its low one must follow. */
					if (n - i < 6 || p[i] != '\\' || p[i + 1] != 'u')
						return -1;
					long lo = hex4(p + i + 2, n - i - 2);
					if (lo < 0xdc00 || lo > 0xdfff)
						return -1;
					i += 6;
					u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
				}
				if (u == 0)
					return -1; /* a NUL would cut the C string */
				if (u < 0x80) {
					tmp[k++] = u;
				} else if (u < 0x800) {
					tmp[k++] = 0xc0 | u >> 6;
					tmp[k++] = 0x80 | (u & 0x3f);
				} else if (u < 0x10000) {
					tmp[k++] = 0xe0 | u >> 12;
					tmp[k++] = 0x80 | ((u >> 6) & 0x3f);
					tmp[k++] = 0x80 | (u & 0x3f);
				} else {
					tmp[k++] = 0xf0 | u >> 18;
					tmp[k++] = 0x80 | ((u >> 12) & 0x3f);
					tmp[k++] = 0x80 | ((u >> 6) & 0x3f);
					tmp[k++] = 0x80 | (u & 0x3f);
				}
				break;
			}
			default:
				return -1;
			}
		}
		for (size_t j = 0; j < k; j++, o++)
			if (o + 1 < size)
				out[o] = tmp[j];
	}
	if (size > 0)
		out[o < size ? o : size - 1] = 0;
	return (long)o;
}

/* The raw extent of token t in the text: a string's with its quotes. */
static int raw_start(const jsmntok_t *t) {
	return t->type == JSMN_STRING ? t->start - 1 : t->start;
}

static int raw_end(const jsmntok_t *t) {
	return t->type == JSMN_STRING ? t->end + 1 : t->end;
}

static int is_space(char c) {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* gap_ok says whether js[from, to) is whitespace around one sep (or only
 * whitespace when sep is 0). */
static int gap_ok(const char *js, int from, int to, char sep) {
	int seen = 0;
	for (int i = from; i < to; i++) {
		if (is_space(js[i]))
			continue;
		if (js[i] != sep || seen)
			return 0;
		seen = 1;
	}
	return seen == (sep != 0);
}

/* primitive_ok says whether token t is true, false, null or a JSON number. */
static int primitive_ok(const char *js, const jsmntok_t *t) {
	const char *p = js + t->start;
	int n = t->end - t->start;
	if ((n == 4 && !memcmp(p, "true", 4)) || (n == 5 && !memcmp(p, "false", 5)) || (n == 4 && !memcmp(p, "null", 4)))
		return 1;
	int i = 0;
	if (i < n && p[i] == '-')
		i++;
	if (i < n && p[i] == '0') {
		i++;
	} else if (i < n && p[i] >= '1' && p[i] <= '9') {
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
	} else {
		return 0;
	}
	if (i < n && p[i] == '.') {
		i++;
		if (i >= n || p[i] < '0' || p[i] > '9')
			return 0;
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		i++;
		if (i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= n || p[i] < '0' || p[i] > '9')
			return 0;
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
	}
	return i == n;
}

/* check_value checks the value at token i and what it holds, as a JSON
 * decoder would (jsmn lets stray commas and colons, and any primitive,
 * through); it returns the index of the token after it, or -1. */
static int check_value(const char *js, const jsmntok_t *t, int ntok, int i) {
	const jsmntok_t *v = &t[i];
	if (v->start < 0 || v->end < 0)
		return -1;
	if (v->type == JSMN_PRIMITIVE)
		return primitive_ok(js, v) ? i + 1 : -1;
	if (v->type == JSMN_STRING) {
		for (int k = v->start; k < v->end; k++)
			if ((unsigned char)js[k] < 0x20)
				return -1;
		return i + 1;
	}
	int obj = v->type == JSMN_OBJECT, pos = v->start + 1, j = i + 1;
	for (int k = 0; k < v->size; k++) {
		if (j >= ntok || t[j].parent != i || !gap_ok(js, pos, raw_start(&t[j]), k ? ',' : 0))
			return -1;
		if (obj) {
			/* a key, then its one value */
			if (t[j].type != JSMN_STRING || t[j].size != 1 || check_value(js, t, ntok, j) < 0)
				return -1;
			pos = raw_end(&t[j]);
			j++;
			if (j >= ntok || t[j].parent != j - 1 || !gap_ok(js, pos, raw_start(&t[j]), ':'))
				return -1;
		}
		pos = raw_end(&t[j]);
		if ((j = check_value(js, t, ntok, j)) < 0)
			return -1;
	}
	return gap_ok(js, pos, v->end - 1, 0) ? j : -1;
}

/* key_is says whether the key token t, unescaped, is name. */
static int key_is(const char *js, const jsmntok_t *t, const char *name) {
	char k[16];
	long n = json_unescape(js + t->start, t->end - t->start, k, sizeof k);
	return n >= 0 && n < (long)sizeof k && !strcmp(k, name);
}

static int is_null(const char *js, const jsmntok_t *t) {
	return t->type == JSMN_PRIMITIVE && t->end - t->start == 4 && !memcmp(js + t->start, "null", 4);
}

/* get_bool reads a boolean (null is false); -1 when t is none. */
static int get_bool(const char *js, const jsmntok_t *t) {
	if (t->type != JSMN_PRIMITIVE)
		return -1;
	if (t->end - t->start == 4 && !memcmp(js + t->start, "true", 4))
		return 1;
	if (t->end - t->start == 5 && !memcmp(js + t->start, "false", 5))
		return 0;
	return is_null(js, t) ? 0 : -1;
}

/* get_int reads an integer: -?(0|[1-9][0-9]*) within a long; -1 when t is
 * none. */
static int get_int(const char *js, const jsmntok_t *t, long *v) {
	if (t->type != JSMN_PRIMITIVE)
		return -1;
	const char *p = js + t->start;
	int n = t->end - t->start, i = 0, neg = 0;
	if (i < n && p[i] == '-')
		neg = 1, i++;
	if (i >= n || p[i] < '0' || p[i] > '9' || (p[i] == '0' && n - i > 1))
		return -1;
	long x = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		int d = p[i] - '0';
		if (x > (LONG_MAX - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	*v = neg ? -x : x;
	return 0;
}

/* value_of returns the index of the value of the key at i, or -1 when it
 * has not been parsed (yet). */
static int value_of(const jsmntok_t *t, int ntok, int i) {
	return i + 1 < ntok && t[i + 1].parent == i ? i + 1 : -1;
}

/* take_attach reads the attach object at token a. */
static int take_attach(const char *js, const jsmntok_t *t, int ntok, int a, struct request *r) {
	if (is_null(js, &t[a]))
		return 0;
	if (t[a].type != JSMN_OBJECT)
		return fail(r, FIELD_ATTACH " is not an object");
	int seen[3] = {0, 0, 0};
	static const char *const names[3] = {FIELD_STDIN, FIELD_STDOUT, FIELD_STDERR};
	int *dst[3] = {&r->attach_stdin, &r->attach_stdout, &r->attach_stderr};
	for (int i = a + 1; i < ntok; i++) {
		if (t[i].parent != a || t[i].type != JSMN_STRING)
			continue;
		for (int k = 0; k < 3; k++) {
			if (!key_is(js, &t[i], names[k]))
				continue;
			if (seen[k]++)
				return fail(r, FIELD_ATTACH ".%s given twice", names[k]);
			int v = value_of(t, ntok, i), b;
			if (v < 0)
				break; /* not yet: a prefix */
			if ((b = get_bool(js, &t[v])) < 0)
				return fail(r, FIELD_ATTACH ".%s is not a boolean", names[k]);
			*dst[k] = b;
		}
	}
	return 0;
}

int parse_request(const char *buf, size_t len, struct request *r) {
	memset(r, 0, sizeof *r);
	const char *nl = memchr(buf, '\n', len);
	size_t n = nl ? (size_t)(nl - buf) : len;
	if (n > INT_MAX / 2)
		return fail(r, "request too long");
	jsmntok_t t[REQ_TOKENS];
	jsmn_parser p;
	jsmn_init(&p);
	int rc = jsmn_parse(&p, buf, n, t, REQ_TOKENS);
	int ntok = rc >= 0 ? rc : (int)p.toknext;
	if (rc == JSMN_ERROR_INVAL)
		return fail(r, "malformed JSON");
	if (rc == JSMN_ERROR_NOMEM)
		r->prefix_only = 1;
	if (ntok == 0) {
		if (!nl)
			return REQ_PARTIAL;
		return fail(r, rc == 0 ? "empty request" : "malformed JSON");
	}
	if (t[0].type != JSMN_OBJECT)
		return fail(r, "not a JSON object");
	/* The top-level keys: those whose parent is the object. */
	int seen_v = 0, seen_op = 0, seen_attach = 0;
	for (int i = 1; i < ntok; i++) {
		if (t[i].parent == -1)
			return fail(r, "more than one JSON value");
		if (t[i].parent != 0 || t[i].type != JSMN_STRING)
			continue;
		int v = value_of(t, ntok, i);
		if (key_is(buf, &t[i], FIELD_V)) {
			if (seen_v++)
				return fail(r, "\"" FIELD_V "\" given twice");
			if (v < 0 || is_null(buf, &t[v]))
				continue;
			if (get_int(buf, &t[v], &r->v) < 0)
				return fail(r, "\"" FIELD_V "\" is not an integer");
			r->have_v = 1;
		} else if (key_is(buf, &t[i], FIELD_OP)) {
			if (seen_op++)
				return fail(r, "\"" FIELD_OP "\" given twice");
			if (v < 0 || is_null(buf, &t[v]))
				continue;
			if (t[v].type != JSMN_STRING)
				return fail(r, "\"" FIELD_OP "\" is not a string");
			/* An op too long for REQ_OP_MAX is no op the monitor
			 * knows: it is kept cut, as an unknown one. */
			if (json_unescape(buf + t[v].start, t[v].end - t[v].start, r->op, sizeof r->op) < 0)
				return fail(r, "\"" FIELD_OP "\" is not a valid string");
			r->have_op = 1;
		} else if (key_is(buf, &t[i], FIELD_ATTACH)) {
			if (seen_attach++)
				return fail(r, "\"" FIELD_ATTACH "\" given twice");
			if (v >= 0 && take_attach(buf, t, ntok, v, r) == REQ_ERROR)
				return REQ_ERROR;
		}
	}
	if (!nl)
		return REQ_PARTIAL;
	/* A whole line: all of it must be one valid object, then whitespace. */
	if (rc < 0)
		return fail(r, rc == JSMN_ERROR_NOMEM ? "request too large" : "malformed JSON");
	int next = check_value(buf, t, ntok, 0);
	if (next != ntok)
		return fail(r, "malformed JSON");
	if (!gap_ok(buf, t[0].end, (int)n, 0))
		return fail(r, "trailing data after the JSON object");
	r->len = n + 1;
	return REQ_COMPLETE;
}
