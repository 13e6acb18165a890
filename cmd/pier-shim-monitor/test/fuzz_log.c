/*
 * fuzz_log.c: libFuzzer target of the CRI log's line splitter (bin/fuzz-log).
 *
 * The input describes a container's output and how it arrives: its first
 * byte's low bit is crlf (a terminal's output); then records, each led by
 * a byte r: r&3 == 0: the next r>>2 bytes, as they are; 1: a run, the next
 * two bytes a count and the third the byte repeated (long lines from
 * short inputs); 2: a read ends here; 3: a newline ("\r\n" when r>>2 is
 * odd). The output is fed to the splitter in those reads (each cut further
 * to the room the splitter offers), then ended.
 *
 * It checks that the entries give back the output: every entry's content
 * at most MAX_LINE bytes; taken in order, the contents are the output
 * with its newlines (and with crlf, a \r right before one) removed; an F
 * entry ends at a newline, a P entry does not (it is MAX_LINE bytes of a
 * longer line, or the output's end, and never empty).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../split.h"

#define REQUIRE(c)                         \
	do {                               \
		if (!(c))                  \
			__builtin_trap();  \
	} while (0)

#define STREAM_MAX (1 << 20)

static char stream[STREAM_MAX], content[STREAM_MAX], buf[SPLIT_CAP];
static size_t ends[STREAM_MAX]; /* where each read ends */
static char tags[STREAM_MAX];
static size_t lens[STREAM_MAX];
static size_t nentries, ncontent;

static void sink(void *arg, char tag, const char *p, size_t n) {
	(void)arg;
	REQUIRE(tag == 'P' || tag == 'F');
	REQUIRE(n <= MAX_LINE);
	REQUIRE(ncontent + n <= STREAM_MAX && nentries < STREAM_MAX);
	memcpy(content + ncontent, p, n);
	ncontent += n;
	tags[nentries] = tag;
	lens[nentries++] = n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
	if (size == 0)
		return 0;
	int crlf = data[0] & 1;
	size_t slen = 0, nends = 0;
	for (size_t i = 1; i < size;) {
		uint8_t r = data[i++];
		switch (r & 3) {
		case 0: {
			size_t n = r >> 2;
			if (n > size - i)
				n = size - i;
			if (n > STREAM_MAX - slen)
				n = STREAM_MAX - slen;
			memcpy(stream + slen, data + i, n);
			slen += n, i += n;
			break;
		}
		case 1: {
			if (size - i < 3) {
				i = size;
				break;
			}
			size_t n = data[i] | data[i + 1] << 8;
			if (n > STREAM_MAX - slen)
				n = STREAM_MAX - slen;
			memset(stream + slen, data[i + 2], n);
			slen += n, i += 3;
			break;
		}
		case 2:
			ends[nends++] = slen;
			break;
		case 3:
			if ((r >> 2) & 1 && slen < STREAM_MAX)
				stream[slen++] = '\r';
			if (slen < STREAM_MAX)
				stream[slen++] = '\n';
			break;
		}
	}
	ends[nends++] = slen;

	struct splitter s = {buf, 0, crlf};
	nentries = ncontent = 0;
	size_t pos = 0;
	for (size_t e = 0; e < nends; e++) {
		while (pos < ends[e]) {
			size_t room;
			char *p = split_room(&s, &room);
			REQUIRE(room >= 4096 && p >= buf && p + room <= buf + SPLIT_CAP);
			size_t n = ends[e] - pos < room ? ends[e] - pos : room;
			memcpy(p, stream + pos, n);
			split_add(&s, n, sink, NULL);
			REQUIRE(s.n <= MAX_LINE);
			pos += n;
		}
	}
	split_end(&s, sink, NULL);
	REQUIRE(s.n == 0);

	/* Walk the output with the entries. */
	size_t at = 0, c = 0;
	for (size_t k = 0; k < nentries; k++) {
		size_t n = lens[k];
		REQUIRE(at + n <= slen && !memcmp(stream + at, content + c, n));
		at += n, c += n;
		if (tags[k] == 'F') {
			if (crlf && at + 1 < slen && stream[at] == '\r' && stream[at + 1] == '\n') {
				at += 2;
			} else {
				REQUIRE(at < slen && stream[at] == '\n');
				/* with crlf, a \r before the newline is never content */
				REQUIRE(!crlf || n == 0 || stream[at - 1] != '\r');
				at++;
			}
		} else {
			REQUIRE(n > 0);
			if (at < slen)
				REQUIRE(n == MAX_LINE && stream[at] != '\n');
			else
				REQUIRE(k == nentries - 1);
		}
	}
	REQUIRE(at == slen && c == ncontent);
	return 0;
}
