/*
 * split.h: the CRI log's line splitter. It cuts a container's output into
 * log entries, each a line (tag 'F', its newline, and with crlf a \r
 * before it, dropped) or a part of one (tag 'P': a line longer than
 * MAX_LINE, or the output's end without a newline), and hands each to a
 * sink. It needs no other part of the monitor (a fuzz target links it
 * alone).
 */
#ifndef PIER_SPLIT_H
#define PIER_SPLIT_H

#include <stddef.h>

#define MAX_LINE (16 << 10)            /* the longest entry's content */
#define SPLIT_CAP (MAX_LINE + (4 << 10)) /* the buffer a splitter needs */

typedef void (*split_sink)(void *arg, char tag, const char *p, size_t n);

struct splitter {
	char *buf; /* SPLIT_CAP bytes */
	size_t n;  /* held: the start of a line, at most MAX_LINE bytes */
	int crlf;  /* a terminal's output: lines end in \r\n */
};

/* split_room returns where the next bytes of output go, and how many fit
 * (*room, always 4 KiB or more). */
char *split_room(struct splitter *s, size_t *room);

/* split_add takes the n bytes put at split_room's pointer: it hands the
 * complete lines to sink, cutting those longer than MAX_LINE, and keeps
 * the rest, handing on MAX_LINE-long parts of a line that keeps growing. */
void split_add(struct splitter *s, size_t n, split_sink sink, void *arg);

/* split_end hands what is left, a line without its newline, to sink as a
 * partial entry. */
void split_end(struct splitter *s, split_sink sink, void *arg);

#endif
