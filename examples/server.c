/*
 * server: slow I/O with many connections on an event loop, CPU work on a
 * process pool, joined by the completion fd.
 *
 * One thread runs an epoll loop on 127.0.0.1: it accepts clients, reads a
 * 4-byte number from each (the clients are slow: they send a byte at a
 * time), hands "count the primes below n" to a process pool, and waits for
 * the results on the same epoll set through fut_as_completed_fd().  The
 * example starts its own clients (threads), checks every answer, and ends
 * by itself.
 *
 *   server [clients]      (default 64; 16 with FUT_EXAMPLE_QUICK=1)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <future.h>

static uint64_t count_primes_below(uint32_t n)
{
	uint64_t count = 0;
	for (uint32_t k = 2; k < n; k++) {
		bool prime = true;
		for (uint32_t d = 2; d * d <= k; d++)
			if (k % d == 0) {
				prime = false;
				break;
			}
		count += prime;
	}
	return count;
}

/* The process-pool task: 4 bytes in, 8 bytes out. */
static void primes_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	uint32_t n;
	if (len != sizeof(n)) {
		fut_task_fail(t, 1, "want 4 bytes, got %zu", len);
		return;
	}
	memcpy(&n, in, sizeof(n));
	uint64_t c = count_primes_below(n);
	fut_task_return_bytes(t, &c, sizeof(c));
}

static uint16_t port;
static _Atomic int client_errors;

static uint32_t number_for(int i)
{
	return 20000u + (uint32_t)i * 500u;
}

/* A slow client: sends its number a byte at a time, then reads the
 * answer and checks it. */
static void *client(void *arg)
{
	int i = (int)(intptr_t)arg;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
		client_errors++;
		close(s);
		return NULL;
	}
	uint32_t n = number_for(i);
	unsigned char *p = (unsigned char *)&n;
	for (size_t k = 0; k < sizeof(n); k++) {
		struct timespec slow = { 0, 2 * 1000 * 1000 };
		nanosleep(&slow, NULL);
		if (send(s, p + k, 1, MSG_NOSIGNAL) != 1)
			client_errors++;
	}
	uint64_t got = 0;
	size_t have = 0;
	while (have < sizeof(got)) {
		ssize_t r = recv(s, (char *)&got + have, sizeof(got) - have, 0);
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	if (have != sizeof(got) || got != count_primes_below(n)) {
		fprintf(stderr, "client %d: wrong answer\n", i);
		client_errors++;
	}
	close(s);
	return NULL;
}

struct conn {
	int fd;
	uint32_t n;
	size_t have;
	fut_future *f;
};

/* Connections waiting for their result, found again by their future. */
static struct conn **waiting;
static size_t nwaiting, capwaiting;

/* False when out of memory. */
static bool put_conn(struct conn *c)
{
	if (nwaiting == capwaiting) {
		size_t cap = capwaiting ? capwaiting * 2 : 64;
		struct conn **w = realloc(waiting, cap * sizeof(*w));
		if (w == NULL)
			return false;
		waiting = w;
		capwaiting = cap;
	}
	waiting[nwaiting++] = c;
	return true;
}

static struct conn *take_conn(const fut_future *f)
{
	for (size_t i = 0; i < nwaiting; i++) {
		struct conn *c = waiting[i];
		if (c->f == f) {
			waiting[i] = waiting[--nwaiting];
			return c;
		}
	}
	return NULL;
}

/* Adds fd to the epoll set (EPOLLIN, ptr its data) or removes it; false,
 * saying why, when epoll_ctl fails. */
static bool watch(int ep, int op, int fd, void *ptr)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = ptr };
	if (epoll_ctl(ep, op, fd, &ev) == 0)
		return true;
	perror("server: epoll_ctl");
	return false;
}

int main(int argc, char **argv)
{
	const char *q = getenv("FUT_EXAMPLE_QUICK");
	int clients = argc > 1				   ? atoi(argv[1]) :
		      q != NULL && *q != '\0' && *q != '0' ? 16 :
							     64;
	if (clients < 1 || clients > 10000)
		return 2;

	/* Make the process pool first, while this process has one thread:
	 * its fork server then copies nothing but this thread. */
	fut_executor *pool;
	if (fut_process_pool_new(&pool, NULL) != FUT_OK) {
		fprintf(stderr, "server: no process pool\n");
		return 1;
	}

	int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    listen(ls, 1024) != 0 ||
	    getsockname(ls, (struct sockaddr *)&a, &alen) != 0)
		return 1;
	port = ntohs(a.sin_port);

	fut_as_completed *done;
	if (fut_as_completed_new(&done, NULL, 0) != FUT_OK)
		return 1;
	int done_fd = fut_as_completed_fd(done);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || !watch(ep, EPOLL_CTL_ADD, ls, NULL))
		return 1;
	/* The completion fd is readable while next() would not block, and
	 * that includes FUT_END: keep it in the set only while futures are
	 * in flight. */
	bool watching = false;
	int in_flight = 0;

	pthread_t *threads = calloc((size_t)clients, sizeof(*threads));
	if (threads == NULL)
		return 1;
	for (int i = 0; i < clients; i++)
		if (pthread_create(&threads[i], NULL, client,
				   (void *)(intptr_t)i) != 0) {
			fprintf(stderr, "server: cannot start client %d\n", i);
			return 1;
		}

	int served = 0;
	struct conn done_marker;
	while (served < clients) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 10000);
		if (k <= 0) {
			fprintf(stderr, "server: stalled\n");
			return 1;
		}
		for (int e = 0; e < k; e++) {
			struct conn *c = evs[e].data.ptr;
			if (c == NULL) { /* the listening socket */
				int s;
				while ((s = accept4(ls, NULL, NULL,
						    SOCK_NONBLOCK |
							    SOCK_CLOEXEC)) >=
				       0) {
					struct conn *nc =
						calloc(1, sizeof(*nc));
					if (nc == NULL ||
					    !watch(ep, EPOLL_CTL_ADD, s, nc))
						return 1;
					nc->fd = s;
				}
			} else if (c == &done_marker) { /* results */
				fut_future *f;
				while (fut_as_completed_next(done, 0, &f) ==
				       FUT_OK) {
					struct conn *cc = take_conn(f);
					const void *data;
					size_t len;
					if (cc == NULL ||
					    fut_result_bytes(f, 0, &data,
							     &len) != FUT_OK ||
					    len != 8) {
						fprintf(stderr, "server: %s\n",
							fut_error_message(f));
						return 1;
					}
					/* 8 bytes always fit a fresh socket's
					 * buffer: no need to wait for EPOLLOUT. */
					if (send(cc->fd, data, len,
						 MSG_NOSIGNAL) != (ssize_t)len)
						return 1;
					close(cc->fd);
					fut_release(cc->f); /* the iterator
							     * keeps its own */
					free(cc);
					in_flight--;
					served++;
				}
			} else { /* a client sent bytes */
				ssize_t r = recv(c->fd, (char *)&c->n + c->have,
						 sizeof(c->n) - c->have, 0);
				/* 0: it left before its request was whole
				 * (errno is stale then). */
				if (r == 0 || (r < 0 && errno != EAGAIN))
					return 1;
				if (r > 0)
					c->have += (size_t)r;
				if (c->have < sizeof(c->n))
					continue;
				if (!watch(ep, EPOLL_CTL_DEL, c->fd, NULL) ||
				    fut_submit_bytes(pool, primes_task, &c->n,
						     sizeof(c->n),
						     &c->f) != FUT_OK)
					return 1;
				/* Out of memory, the request would never be
				 * answered: give up, as for a failed submit. */
				if (!put_conn(c) ||
				    fut_as_completed_add(done, c->f) != FUT_OK)
					return 1;
				in_flight++;
				if (!watching) {
					if (!watch(ep, EPOLL_CTL_ADD, done_fd,
						   &done_marker))
						return 1;
					watching = true;
				}
			}
		}
		if (watching && in_flight == 0) {
			if (!watch(ep, EPOLL_CTL_DEL, done_fd, NULL))
				return 1;
			watching = false;
		}
	}
	for (int i = 0; i < clients; i++)
		pthread_join(threads[i], NULL);
	fut_as_completed_free(done);
	fut_executor_free(pool);
	close(ep);
	close(ls);
	free(threads);
	free(waiting);
	printf("server: %d slow clients served, %d wrong answers\n", served,
	       (int)client_errors);
	return client_errors == 0 ? 0 : 1;
}
