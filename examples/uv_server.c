/*
 * uv_server: a libuv TCP server whose CPU work runs on a process pool,
 * joined to the loop by the completion fd.
 *
 * One libuv loop on 127.0.0.1 runs both sides.  The server accepts
 * connections, reads a request line ("n\n": which prime to find), hands
 * "find the n-th prime" to a process pool, and watches
 * fut_as_completed_fd() with a uv_poll_t; each result goes back with
 * uv_write.  The clients, on the same loop, connect, send their line in
 * two writes, and check the answer against a sieve made at start (the
 * task uses trial division, so the check is independent of it).  A
 * request and its result carry the connection's index, so a result finds
 * its connection without a search.  When every client has its answer
 * every handle is closed (uv_close), uv_run returns, and
 * fut_executor_free() ends the pool.  A 60 s timer fails a stalled run.
 *
 *   uv_server [clients]      (default 64; 16 with FUT_EXAMPLE_QUICK=1)
 *
 * pkg-config: libuv
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <future.h>

struct request {
	uint32_t conn; /* the server's index of the connection */
	uint32_t n;
};

struct reply {
	uint32_t conn;
	uint32_t prime; /* the n-th prime */
};

/* The process-pool task: a request in, a reply out. */
static void nth_prime_task(fut_task *t)
{
	size_t len;
	const void *in = fut_task_input(t, &len);
	struct request rq;
	if (len != sizeof(rq)) {
		fut_task_fail(t, 1, "want %zu bytes, got %zu", sizeof(rq), len);
		return;
	}
	memcpy(&rq, in, sizeof(rq));
	struct reply rp = { .conn = rq.conn, .prime = 1 };
	for (uint32_t found = 0; found < rq.n;) {
		bool prime = true;
		rp.prime++;
		for (uint32_t d = 2; d * d <= rp.prime; d++)
			if (rp.prime % d == 0) {
				prime = false;
				break;
			}
		found += prime;
	}
	fut_task_return_bytes(t, &rp, sizeof(rp));
}

/* A server-side connection: the request line as it arrives, the reply
 * while it is written. */
struct conn {
	uv_tcp_t tcp;
	uint32_t index;
	char line[16];
	size_t have;
	uv_write_t write;
	char out[16];
};

/* A client: its request, and the answer as it arrives. */
struct client {
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_write_t writes[2];
	uint32_t n;
	char line[16];
	char in[16];
	size_t have;
};

static uv_loop_t loop;
static uv_tcp_t listener;
static uv_poll_t results; /* watches the completion fd */
static uv_timer_t watchdog;
static bool polling;
static fut_executor *pool;
static fut_as_completed *done;

static int nclients;
static struct client *clients;
static struct conn **conns; /* by index, while open */
static uint32_t accepted;
static int served, answered, wrong;
static uint32_t *primes; /* primes[k] is the (k+1)-th prime */
static uint32_t nprimes;

static void die_uv(const char *what, int rc)
{
	fprintf(stderr, "uv_server: %s: %s\n", what, uv_strerror(rc));
	exit(1);
}

static void die_fut(const char *what, int rc)
{
	fprintf(stderr, "uv_server: %s: %s\n", what, fut_strerror(rc));
	exit(1);
}

static void check(int rc, const char *what)
{
	if (rc < 0)
		die_uv(what, rc);
}

/* The primes below a bound, from a sieve of Eratosthenes; 1 on success. */
static int make_primes(uint32_t max_n)
{
	/* p_n < n (ln n + ln ln n) for n >= 6 (Rosser), which is below
	 * 17 n while n < 2^20; requests ask for less (a larger n would fail
	 * the check below, not pass it). */
	uint32_t limit = max_n * 17 + 16;
	unsigned char *composite = calloc(limit, 1);
	primes = calloc(max_n + 1, sizeof(*primes));
	if (composite == NULL || primes == NULL)
		return 0;
	for (uint32_t k = 2; k < limit && nprimes <= max_n; k++) {
		if (composite[k])
			continue;
		primes[nprimes++] = k;
		for (uint64_t m = (uint64_t)k * k; m < limit; m += k)
			composite[m] = 1;
	}
	free(composite);
	return 1;
}

static uint32_t number_for(int i)
{
	return 5000u + (uint32_t)i * 97u;
}

static void on_closed_free(uv_handle_t *h)
{
	struct conn *c = h->data;
	free(c);
}

static void close_everything(void)
{
	uv_close((uv_handle_t *)&listener, NULL);
	uv_close((uv_handle_t *)&results, NULL);
	check(uv_timer_stop(&watchdog), "uv_timer_stop");
}

/* The end comes when the server has written every reply and every
 * client has checked its answer, in whichever order they finish. */
static void maybe_finish(void)
{
	if (served == nclients && answered == nclients)
		close_everything();
}

/* ---- server side ------------------------------------------------- */

static void on_replied(uv_write_t *w, int status)
{
	struct conn *c = w->data;
	check(status, "writing a reply");
	conns[c->index] = NULL;
	uv_close((uv_handle_t *)&c->tcp, on_closed_free);
	served++;
	maybe_finish();
}

static void send_reply(fut_future *f)
{
	const void *data;
	size_t len;
	struct reply rp;
	int rc = fut_result_bytes(f, 0, &data, &len);
	if (rc != FUT_OK) {
		fprintf(stderr, "uv_server: a task failed: %s\n",
			fut_error_message(f));
		exit(1);
	}
	if (len != sizeof(rp)) {
		fprintf(stderr, "uv_server: a %zu-byte result\n", len);
		exit(1);
	}
	memcpy(&rp, data, sizeof(rp));
	struct conn *c = rp.conn < accepted ? conns[rp.conn] : NULL;
	if (c == NULL) {
		fprintf(stderr, "uv_server: a result for no connection\n");
		exit(1);
	}
	int n = snprintf(c->out, sizeof(c->out), "%u\n", (unsigned)rp.prime);
	uv_buf_t buf = uv_buf_init(c->out, (unsigned)n);
	c->write.data = c;
	check(uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_replied),
	      "uv_write");
}

/* The completion fd is readable: take every result that is ready.  A
 * wake-up with none ready gives FUT_ETIMEDOUT at once.  FUT_END (nothing
 * in flight) keeps the fd readable, so the poll stops until the next
 * submit starts it again. */
static void on_results(uv_poll_t *h, int status, int events)
{
	(void)h;
	(void)events;
	check(status, "polling the completion fd");
	fut_future *f;
	int rc;
	while ((rc = fut_as_completed_next(done, 0, &f)) == FUT_OK)
		send_reply(f); /* f is borrowed from the iterator */
	if (rc == FUT_END) {
		check(uv_poll_stop(&results), "uv_poll_stop");
		polling = false;
	} else if (rc != FUT_ETIMEDOUT) {
		die_fut("fut_as_completed_next", rc);
	}
}

static void submit_request(struct conn *c, uint32_t n)
{
	struct request rq = { .conn = c->index, .n = n };
	fut_future *f;
	int rc = fut_submit_bytes(pool, nth_prime_task, &rq, sizeof(rq), &f);
	if (rc != FUT_OK)
		die_fut("fut_submit_bytes", rc);
	rc = fut_as_completed_add(done, f);
	fut_release(f); /* the iterator keeps its own reference */
	if (rc != FUT_OK)
		die_fut("fut_as_completed_add", rc);
	if (!polling) {
		check(uv_poll_start(&results, UV_READABLE, on_results),
		      "uv_poll_start");
		polling = true;
	}
}

static void alloc_request(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)suggested;
	*buf = uv_buf_init(c->line + c->have,
			   (unsigned)(sizeof(c->line) - c->have));
}

static void on_request(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	(void)buf;
	if (nread < 0)
		die_uv("reading a request", (int)nread);
	c->have += (size_t)nread;
	char *nl = memchr(c->line, '\n', c->have);
	if (nl == NULL) {
		if (c->have == sizeof(c->line)) {
			fprintf(stderr, "uv_server: a request too long\n");
			exit(1);
		}
		return; /* the rest of the line is still on its way */
	}
	*nl = '\0';
	char *end;
	unsigned long n = strtoul(c->line, &end, 10);
	if (end == c->line || *end != '\0' || n == 0 || n > 1u << 20) {
		fprintf(stderr, "uv_server: a bad request '%s'\n", c->line);
		exit(1);
	}
	check(uv_read_stop(s), "uv_read_stop");
	submit_request(c, (uint32_t)n);
}

static void on_connection(uv_stream_t *server, int status)
{
	check(status, "listening");
	if (accepted == (uint32_t)nclients) {
		fprintf(stderr, "uv_server: more connections than clients\n");
		exit(1);
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		fprintf(stderr, "uv_server: no memory\n");
		exit(1);
	}
	check(uv_tcp_init(&loop, &c->tcp), "uv_tcp_init");
	c->tcp.data = c;
	check(uv_accept(server, (uv_stream_t *)&c->tcp), "uv_accept");
	c->index = accepted++;
	conns[c->index] = c;
	check(uv_read_start((uv_stream_t *)&c->tcp, alloc_request, on_request),
	      "uv_read_start");
}

/* ---- client side ------------------------------------------------- */

static void alloc_answer(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct client *cl = h->data;
	(void)suggested;
	*buf = uv_buf_init(cl->in + cl->have,
			   (unsigned)(sizeof(cl->in) - cl->have - 1));
}

static void on_answer(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct client *cl = s->data;
	(void)buf;
	if (nread < 0)
		die_uv("reading an answer", (int)nread);
	cl->have += (size_t)nread;
	cl->in[cl->have] = '\0';
	char *nl = strchr(cl->in, '\n');
	if (nl == NULL) {
		if (cl->have == sizeof(cl->in) - 1) {
			fprintf(stderr, "uv_server: an answer too long\n");
			exit(1);
		}
		return;
	}
	*nl = '\0';
	uint32_t want = cl->n <= nprimes ? primes[cl->n - 1] : 0;
	char *end;
	unsigned long got = strtoul(cl->in, &end, 10);
	if (want == 0 || end == cl->in || *end != '\0' || got != want) {
		fprintf(stderr, "uv_server: prime #%u: got '%s', want %u\n",
			(unsigned)cl->n, cl->in, (unsigned)want);
		wrong++;
	}
	answered++;
	uv_close((uv_handle_t *)&cl->tcp, NULL);
	maybe_finish();
}

static void on_sent(uv_write_t *w, int status)
{
	(void)w;
	check(status, "writing a request");
}

static void on_connected(uv_connect_t *req, int status)
{
	struct client *cl = req->data;
	check(status, "connecting");
	/* The request in two pieces: the server must put lines together. */
	size_t len = strlen(cl->line), half = len / 2;
	uv_buf_t first = uv_buf_init(cl->line, (unsigned)half);
	uv_buf_t rest = uv_buf_init(cl->line + half, (unsigned)(len - half));
	check(uv_write(&cl->writes[0], (uv_stream_t *)&cl->tcp, &first, 1,
		       on_sent),
	      "uv_write");
	check(uv_write(&cl->writes[1], (uv_stream_t *)&cl->tcp, &rest, 1,
		       on_sent),
	      "uv_write");
	check(uv_read_start((uv_stream_t *)&cl->tcp, alloc_answer, on_answer),
	      "uv_read_start");
}

static void start_client(int i, const struct sockaddr *addr)
{
	struct client *cl = &clients[i];
	cl->n = number_for(i);
	snprintf(cl->line, sizeof(cl->line), "%u\n", (unsigned)cl->n);
	check(uv_tcp_init(&loop, &cl->tcp), "uv_tcp_init");
	cl->tcp.data = cl;
	cl->connect.data = cl;
	check(uv_tcp_connect(&cl->connect, &cl->tcp, addr, on_connected),
	      "uv_tcp_connect");
}

static void on_stalled(uv_timer_t *t)
{
	(void)t;
	fprintf(stderr, "uv_server: stalled: %d of %d served, %d answered\n",
		served, nclients, answered);
	exit(1);
}

int main(int argc, char **argv)
{
	const char *q = getenv("FUT_EXAMPLE_QUICK");
	nclients = q != NULL && *q != '\0' && *q != '0' ? 16 : 64;
	if (argc > 1)
		nclients = atoi(argv[1]);
	if (nclients < 1 || nclients > 10000)
		return 2;

	/* The process pool first, while this process has one thread: its
	 * fork server then copies nothing but this thread. */
	int rc = fut_process_pool_new(&pool, NULL);
	if (rc != FUT_OK)
		die_fut("fut_process_pool_new", rc);
	rc = fut_as_completed_new(&done, NULL, 0);
	if (rc != FUT_OK)
		die_fut("fut_as_completed_new", rc);
	int done_fd = fut_as_completed_fd(done);
	if (done_fd < 0) {
		perror("uv_server: fut_as_completed_fd");
		return 1;
	}
	if (!make_primes(number_for(nclients - 1)))
		return 1;
	clients = calloc((size_t)nclients, sizeof(*clients));
	conns = calloc((size_t)nclients, sizeof(*conns));
	if (clients == NULL || conns == NULL)
		return 1;

	check(uv_loop_init(&loop), "uv_loop_init");
	struct sockaddr_in addr;
	int alen = sizeof(addr);
	check(uv_ip4_addr("127.0.0.1", 0, &addr), "uv_ip4_addr");
	check(uv_tcp_init(&loop, &listener), "uv_tcp_init");
	check(uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0),
	      "uv_tcp_bind");
	check(uv_listen((uv_stream_t *)&listener, 1024, on_connection),
	      "uv_listen");
	check(uv_tcp_getsockname(&listener, (struct sockaddr *)&addr, &alen),
	      "uv_tcp_getsockname");
	check(uv_poll_init(&loop, &results, done_fd), "uv_poll_init");
	check(uv_timer_init(&loop, &watchdog), "uv_timer_init");
	check(uv_timer_start(&watchdog, on_stalled, 60 * 1000, 0),
	      "uv_timer_start");
	for (int i = 0; i < nclients; i++)
		start_client(i, (const struct sockaddr *)&addr);

	uv_run(&loop, UV_RUN_DEFAULT); /* until every handle is closed */
	uv_close((uv_handle_t *)&watchdog, NULL);
	uv_run(&loop, UV_RUN_DEFAULT); /* runs the watchdog's close */
	check(uv_loop_close(&loop), "uv_loop_close");

	fut_as_completed_free(done);
	fut_executor_free(pool); /* every task has ended: returns at once */
	free(conns);
	free(clients);
	free(primes);
	printf("uv_server: %d clients served, %d answers checked, %d wrong\n",
	       served, answered, wrong);
	return served == nclients && answered == nclients && wrong == 0 ? 0 : 1;
}
