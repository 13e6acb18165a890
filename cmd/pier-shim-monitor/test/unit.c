/*
 * unit.c: unit tests of the monitor's parts that a client cannot reach:
 * bin/pier-shim-monitor-unit links it with every file of the monitor but
 * main.c (with AddressSanitizer and UBSan). It prints each failure and
 * "N passed, N failed"; its exit status is 1 when one failed.
 */
#include "../monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond, ...)                                                   \
	do {                                                               \
		if (cond) {                                                \
			passed++;                                          \
		} else {                                                   \
			failed++;                                          \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			printf(__VA_ARGS__);                               \
			printf("\n");                                      \
		}                                                          \
	} while (0)

/* ---- parse_request ---- */

struct req_case {
	const char *in;
	int result;
	const char *op;   /* NULL: have_op is 0 */
	long v;           /* -1000: have_v is 0 */
	int in_, out, err; /* attach */
};

static void test_parse_request(void) {
	static const struct req_case cases[] = {
		{"{\"v\":1,\"op\":\"hello\"}\n", REQ_COMPLETE, "hello", 1, 0, 0, 0},
		{"  {\"op\":\"state\" , \"v\" : 1 }  \r\n", REQ_COMPLETE, "state", 1, 0, 0, 0},
		/* keys are looked up among the top-level object's only */
		{"{\"v\":1,\"x\":{\"op\":\"delete\"},\"op\":\"state\"}\n", REQ_COMPLETE, "state", 1, 0, 0, 0},
		{"{\"v\":1,\"x\":[\"op\",\"delete\"],\"op\":\"state\"}\n", REQ_COMPLETE, "state", 1, 0, 0, 0},
		{"{\"v\":1,\"note\":\"\\\"op\\\":\\\"delete\\\"\",\"op\":\"state\"}\n", REQ_COMPLETE, "state", 1, 0, 0, 0},
		/* escapes */
		{"{\"v\":1,\"op\":\"hel\\u006co\"}\n", REQ_COMPLETE, "hello", 1, 0, 0, 0},
		{"{\"\\u0076\":1,\"\\u006fp\":\"wait\"}\n", REQ_COMPLETE, "wait", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"\\ud83d\\ude00\"}\n", REQ_COMPLETE, "\xf0\x9f\x98\x80", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"a\\/b\\\\c\\n\"}\n", REQ_COMPLETE, "a/b\\c\n", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"\\ud83d\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"\\ude00\\ud83d\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"a\\u0000b\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"a\tb\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"\\x\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		/* an op too long is kept cut: an unknown op */
		{"{\"v\":1,\"op\":\"attachattachattachattachattachattach\"}\n", REQ_COMPLETE, "attachattachattachattachattacha", 1, 0, 0, 0},
		/* v: an integer only */
		{"{\"v\":1.0,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1e0,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":\"1\",\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":01,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":99999999999999999999,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":true,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":2,\"op\":\"hello\"}\n", REQ_COMPLETE, "hello", 2, 0, 0, 0},
		{"{\"v\":-1,\"op\":\"hello\"}\n", REQ_COMPLETE, "hello", -1, 0, 0, 0},
		{"{\"v\":null,\"op\":\"hello\"}\n", REQ_COMPLETE, "hello", -1000, 0, 0, 0},
		{"{\"op\":\"hello\"}\n", REQ_COMPLETE, "hello", -1000, 0, 0, 0},
		{"{\"v\":1}\n", REQ_COMPLETE, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":null}\n", REQ_COMPLETE, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":5}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		/* unknown keys are ignored, whatever they hold */
		{"{\"v\":1,\"op\":\"hello\",\"x\":[1,-2.5e+3,true,false,null,{\"a\":[]}],\"y\":{}}\n", REQ_COMPLETE, "hello", 1, 0, 0, 0},
		/* twice */
		{"{\"v\":1,\"op\":\"hello\",\"op\":\"delete\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"v\":1,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		/* attach */
		{"{\"v\":1,\"op\":\"attach\",\"attach\":{\"stdin\":true,\"stdout\":true,\"stderr\":false}}\n", REQ_COMPLETE, "attach", 1, 1, 1, 0},
		{"{\"v\":1,\"op\":\"attach\",\"attach\":{\"x\":{\"stdin\":true},\"stdout\":true}}\n", REQ_COMPLETE, "attach", 1, 0, 1, 0},
		{"{\"v\":1,\"op\":\"attach\",\"attach\":{\"x\":{},\"stderr\":true}}\n", REQ_COMPLETE, "attach", 1, 0, 0, 1},
		{"{\"v\":1,\"op\":\"attach\",\"stdout\":true,\"attach\":{}}\n", REQ_COMPLETE, "attach", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"attach\",\"attach\":null}\n", REQ_COMPLETE, "attach", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"attach\",\"attach\":{\"stdout\":1}}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"attach\",\"attach\":[true]}\n", REQ_ERROR, NULL, 1, 0, 0, 0},
		/* malformed */
		{"\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"hello\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"[1]\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"\"op\"\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\"\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\"} x\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\"}{}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\",}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{,\"v\":1,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1 \"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\" 1,\"op\":\"hello\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\",\"x\":tru}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\",\"x\":[1,]}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\",\"x\":[1 2]}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\",\"x\":\"a\x01\"}\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"{\"v\":1,\"op\":\"hello\"}\0x\n", REQ_ERROR, NULL, 0, 0, 0, 0},
		/* partial: what the prefix holds */
		{"", REQ_PARTIAL, NULL, -1000, 0, 0, 0},
		{"  ", REQ_PARTIAL, NULL, -1000, 0, 0, 0},
		{"{\"v\":1", REQ_PARTIAL, NULL, -1000, 0, 0, 0},
		{"{\"v\":1,\"op\":\"ex", REQ_PARTIAL, NULL, 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"exec\"", REQ_PARTIAL, "exec", 1, 0, 0, 0},
		{"{\"v\":1,\"op\":\"exec\",\"exec\":{\"args\":[\"sh\"", REQ_PARTIAL, "exec", 1, 0, 0, 0},
		{"{\"x\":{\"op\":\"exec\"", REQ_PARTIAL, NULL, -1000, 0, 0, 0},
		{"{\"v\":2,", REQ_PARTIAL, NULL, 2, 0, 0, 0},
		{"{\"v\":1.5,", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"[", REQ_ERROR, NULL, 0, 0, 0, 0},
		{"x", REQ_ERROR, NULL, 0, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct req_case *c = &cases[i];
		/* the one case with a NUL inside */
		size_t len = strcmp(c->in, "{\"v\":1,\"op\":\"hello\"}") == 0 ? sizeof "{\"v\":1,\"op\":\"hello\"}\0x\n" - 1 : strlen(c->in);
		struct request r;
		int got = parse_request(c->in, len, &r);
		CHECK(got == c->result, "case %zu %s: result %d, want %d (%s)", i, c->in, got, c->result, r.err);
		if (got != c->result || got == REQ_ERROR)
			continue;
		if (c->op)
			CHECK(r.have_op && !strcmp(r.op, c->op), "case %zu %s: op %s", i, c->in, r.have_op ? r.op : "(none)");
		else
			CHECK(!r.have_op, "case %zu %s: op %s", i, c->in, r.op);
		if (c->v == -1000)
			CHECK(!r.have_v, "case %zu %s: v %ld", i, c->in, r.v);
		else
			CHECK(r.have_v && r.v == c->v, "case %zu %s: v %ld (%d)", i, c->in, r.v, r.have_v);
		CHECK(r.attach_stdin == c->in_ && r.attach_stdout == c->out && r.attach_stderr == c->err, "case %zu %s: attach %d %d %d", i, c->in, r.attach_stdin, r.attach_stdout, r.attach_stderr);
		if (got == REQ_COMPLETE)
			CHECK(r.len == len, "case %zu: len %zu, want %zu", i, r.len, len);
	}

	/* A request with more values than the parser keeps: only its prefix
	 * is known; an exec is handed over whole, whatever its size. */
	static char big[200000];
	int n = snprintf(big, sizeof big, "{\"v\":1,\"op\":\"exec\",\"exec\":{\"args\":[");
	for (int i = 0; i < 1000; i++)
		n += snprintf(big + n, sizeof big - n, "%s\"a%d\"", i ? "," : "", i);
	n += snprintf(big + n, sizeof big - n, "]}}\n");
	struct request r;
	int got = parse_request(big, n, &r);
	CHECK(got == REQ_ERROR && r.prefix_only && r.have_op && !strcmp(r.op, "exec") && r.have_v && r.v == 1, "big exec: %d %d %s", got, r.prefix_only, r.op);
	got = parse_request(big, n / 2, &r);
	CHECK(got == REQ_PARTIAL && r.prefix_only && r.have_op && !strcmp(r.op, "exec"), "big exec prefix: %d %d %s", got, r.prefix_only, r.op);
	/* The line ends at the first newline; what follows is not looked at. */
	got = parse_request("{\"v\":1,\"op\":\"hello\"}\n{garbage", 29, &r);
	CHECK(got == REQ_COMPLETE && r.len == 21, "two lines: %d %zu", got, r.len);
}

static void test_unescape(void) {
	char out[8];
	CHECK(json_unescape("abc", 3, out, sizeof out) == 3 && !strcmp(out, "abc"), "plain");
	CHECK(json_unescape("abcdefghij", 10, out, sizeof out) == 10 && !strcmp(out, "abcdefg"), "cut: %s", out);
	CHECK(json_unescape("\\u00e9", 6, out, sizeof out) == 2 && !strcmp(out, "\xc3\xa9"), "2 bytes");
	CHECK(json_unescape("\\u20AC", 6, out, sizeof out) == 3 && !strcmp(out, "\xe2\x82\xac"), "3 bytes");
	CHECK(json_unescape("\\uD834\\uDD1E", 12, out, sizeof out) == 4 && !strcmp(out, "\xf0\x9d\x84\x9e"), "pair");
	CHECK(json_unescape("\\uD834x", 7, out, sizeof out) == -1, "lone high");
	CHECK(json_unescape("\\uD834\\u0041", 12, out, sizeof out) == -1, "high, no low");
	CHECK(json_unescape("\\uDD1E", 6, out, sizeof out) == -1, "lone low");
	CHECK(json_unescape("\\u12", 4, out, sizeof out) == -1, "short");
	CHECK(json_unescape("\\u12g4", 6, out, sizeof out) == -1, "not hex");
	CHECK(json_unescape("\\", 1, out, sizeof out) == -1, "backslash at the end");
	CHECK(json_unescape("\x1f", 1, out, sizeof out) == -1, "control");
}

/* ---- answers ---- */

static void test_buf(void) {
	char small[16];
	struct buf b = BUF(small);
	jopen(&b);
	jint(&b, "v", 1);
	CHECK(!b.failed && !strcmp(small, "{\"v\":1"), "fits: %s", small);
	jstr(&b, "error", "a long message that does not fit");
	CHECK(b.failed, "overflow sets failed");
	CHECK(b.n < sizeof small && strlen(small) == b.n, "never past the end");
	jclose(&b);
	CHECK(b.failed, "stays failed");

	char a[256];
	struct buf e = BUF(a);
	jopen(&e);
	jstr(&e, "s", "q\"b\\n\n\x01");
	jarr_open(&e, "fds");
	jarr_str(&e, "pty");
	jarr_str(&e, "stdin");
	jarr_close(&e);
	jtrue(&e, "t");
	jclose(&e);
	CHECK(!e.failed && !strcmp(a, "{\"s\":\"q\\\"b\\\\n\\u000a\\u0001\",\"fds\":[\"pty\",\"stdin\"],\"t\":true}"), "json: %s", a);

	/* An exit record that does not fit is not written, whole or in part. */
	struct monitor m;
	memset(&m, 0, sizeof m);
	m.exit_code = 137, m.exit_signal = 9, m.oom_killed = 1;
	m.finished_at.tv_sec = 1700000000, m.finished_at.tv_nsec = 123456789;
	char rec[512];
	struct buf r = BUF(rec);
	bexit(&m, &r, 1);
	CHECK(!r.failed && !strcmp(rec, "{\"v\":1,\"code\":137,\"signal\":9,\"oomKilled\":true,\"finishedAt\":\"2023-11-14T22:13:20.123456789Z\"}"), "exit: %s", rec);
	char tiny[40];
	struct buf t = BUF(tiny);
	bexit(&m, &t, 1);
	CHECK(t.failed, "a short buffer fails");
}

static int readable(int fd) {
	char c;
	return recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) > 0;
}

static void test_send_msg(void) {
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0) {
		CHECK(0, "socketpair: %s", strerror(errno));
		return;
	}
	int fds[MAX_FDS + 4];
	for (int i = 0; i < MAX_FDS + 4; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	char a[64];
	/* too many descriptors: refused, nothing sent (no overflow of the
	 * control buffer) */
	struct buf b = BUF(a);
	jopen(&b), jint(&b, "v", 1), jclose(&b);
	errno = 0;
	CHECK(send_msg(sp[0], &b, fds, MAX_FDS + 1) == -1 && errno == EINVAL, "MAX_FDS+1: errno %d", errno);
	CHECK(!readable(sp[1]), "nothing sent");
	b = (struct buf)BUF(a);
	jopen(&b), jint(&b, "v", 1), jclose(&b);
	CHECK(send_msg(sp[0], &b, fds, MAX_FDS + 4) == -1 && errno == EINVAL, "MAX_FDS+4");
	b = (struct buf)BUF(a);
	jopen(&b), jint(&b, "v", 1), jclose(&b);
	CHECK(send_msg(sp[0], &b, fds, -1) == -1 && errno == EINVAL, "-1");
	/* a failed buffer: not sent */
	char s[4];
	struct buf f = BUF(s);
	jopen(&f), jint(&f, "v", 12345), jclose(&f);
	CHECK(send_msg(sp[0], &f, NULL, 0) == -1 && errno == EMSGSIZE, "failed buffer");
	CHECK(!readable(sp[1]), "nothing sent");
	/* MAX_FDS: sent, with the descriptors */
	b = (struct buf)BUF(a);
	jopen(&b), jint(&b, "v", 1), jclose(&b);
	CHECK(send_msg(sp[0], &b, fds, MAX_FDS) == 0, "MAX_FDS: %s", strerror(errno));
	char line[64];
	union {
		char b[CMSG_SPACE(sizeof(int) * (MAX_FDS + 4))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {line, sizeof line};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b, .msg_controllen = sizeof ctl};
	ssize_t n = recvmsg(sp[1], &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	int got = cm ? (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int)) : 0;
	CHECK(n == 8 && !memcmp(line, "{\"v\":1}\n", 8) && got == MAX_FDS, "received %zd bytes, %d fds", n, got);
	for (int i = 0; cm && i < got; i++) {
		int f;
		memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof f);
		close(f);
	}
	for (int i = 0; i < MAX_FDS + 4; i++)
		close(fds[i]);
	close(sp[0]), close(sp[1]);
}

/* ---- the splitter ---- */

static char got_log[4 * SPLIT_CAP];
static size_t got_n;

static void sink(void *arg, char tag, const char *p, size_t n) {
	(void)arg;
	got_n += snprintf(got_log + got_n, sizeof got_log - got_n, "%c%zu:", tag, n);
	if (n <= 16) {
		memcpy(got_log + got_n, p, n);
		got_n += n;
	}
	got_log[got_n++] = '|';
	got_log[got_n] = 0;
}

static const char *split_all(int crlf, const char *const *chunks) {
	static char buf[SPLIT_CAP];
	struct splitter s = {buf, 0, crlf};
	got_n = 0, got_log[0] = 0;
	for (; *chunks; chunks++) {
		const char *c = *chunks;
		size_t len = strlen(c);
		/* "#N" is N bytes of x */
		static char xs[3 * MAX_LINE];
		if (c[0] == '#') {
			len = atoi(c + 1);
			memset(xs, 'x', len);
			c = xs;
		}
		while (len > 0) {
			size_t room;
			char *p = split_room(&s, &room);
			size_t k = len < room ? len : room;
			memcpy(p, c, k);
			split_add(&s, k, sink, NULL);
			c += k, len -= k;
		}
	}
	split_end(&s, sink, NULL);
	return got_log;
}

static void test_split(void) {
	const char *r;
	r = split_all(0, (const char *const[]){"a\nbc", "d\n", "", "e", NULL});
	CHECK(!strcmp(r, "F1:a|F3:bcd|P1:e|"), "%s", r);
	r = split_all(0, (const char *const[]){"a\r\n\n", NULL});
	CHECK(!strcmp(r, "F2:a\r|F0:|"), "no crlf: %s", r);
	r = split_all(1, (const char *const[]){"a\r\n\r", "\nb\r\r\n", "c\r", NULL});
	CHECK(!strcmp(r, "F1:a|F0:|F2:b\r|P2:c\r|"), "crlf: %s", r);
	/* exactly MAX_LINE: a whole line when its newline comes */
	r = split_all(0, (const char *const[]){"#16384", "\n", NULL});
	CHECK(!strcmp(r, "F16384:|"), "MAX_LINE: %s", r);
	r = split_all(0, (const char *const[]){"#16385", "\n", NULL});
	CHECK(!strcmp(r, "P16384:|F1:x|"), "MAX_LINE+1: %s", r);
	r = split_all(0, (const char *const[]){"#40000", NULL});
	CHECK(!strcmp(r, "P16384:|P16384:|P7232:|"), "long, no newline: %s", r);
	r = split_all(1, (const char *const[]){"#16384", "\r", "\n", NULL});
	CHECK(!strcmp(r, "P16384:|F0:|"), "crlf after MAX_LINE, apart: %s", r);
	r = split_all(1, (const char *const[]){"#16384", "\r\n", NULL});
	CHECK(!strcmp(r, "F16384:|"), "crlf after MAX_LINE: %s", r);
}

int main(void) {
	test_parse_request();
	test_unescape();
	test_buf();
	test_send_msg();
	test_split();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
