/*
 * glib_countdown.h: how the GLib peers wait for a batch.  GThreadPool
 * returns nothing per task, so each task counts `left` down and the last
 * one signals the condition variable wait_all() sleeps on.
 */
#ifndef GLIB_COUNTDOWN_H
#define GLIB_COUNTDOWN_H
#include <glib.h>

static gint left;
static GMutex mu;
static GCond cv;

static void count_down(void)
{
	if (g_atomic_int_dec_and_test(&left)) {
		g_mutex_lock(&mu);
		g_cond_signal(&cv);
		g_mutex_unlock(&mu);
	}
}

static void wait_all(void)
{
	g_mutex_lock(&mu);
	while (g_atomic_int_get(&left) != 0)
		g_cond_wait(&cv, &mu);
	g_mutex_unlock(&mu);
}
#endif
