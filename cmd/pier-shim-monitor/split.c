//go:build ignore

/* split.c: the CRI log's line splitter; see split.h. */
#include <string.h>

#include "split.h"

char *split_room(struct splitter *s, size_t *room) {
	*room = SPLIT_CAP - s->n;
	return s->buf + s->n;
}

void split_add(struct splitter *s, size_t n, split_sink sink, void *arg) {
	if (n > SPLIT_CAP - s->n)
		n = SPLIT_CAP - s->n; /* more than split_room allowed: never */
	s->n += n;
	size_t start = 0;
	for (;;) {
		char *nl = memchr(s->buf + start, '\n', s->n - start);
		if (!nl)
			break;
		const char *line = s->buf + start;
		size_t len = nl - line;
		if (s->crlf && len > 0 && line[len - 1] == '\r')
			len--;
		while (len > MAX_LINE) {
			sink(arg, 'P', line, MAX_LINE);
			line += MAX_LINE, len -= MAX_LINE;
		}
		sink(arg, 'F', line, len);
		start = nl - s->buf + 1;
	}
	/* A line of exactly MAX_LINE bytes may still end: it stays until a
	 * byte more comes. */
	while (s->n - start > MAX_LINE) {
		sink(arg, 'P', s->buf + start, MAX_LINE);
		start += MAX_LINE;
	}
	memmove(s->buf, s->buf + start, s->n - start);
	s->n -= start;
}

void split_end(struct splitter *s, split_sink sink, void *arg) {
	if (s->n)
		sink(arg, 'P', s->buf, s->n);
	s->n = 0;
}
