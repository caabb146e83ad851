/* notify.h - the systemd side of mpdetd, written against the documented
 * protocols directly so libsystemd is not needed:
 *   sd_notify: one datagram to $NOTIFY_SOCKET (a leading '@' means an
 *   abstract socket); socket activation: LISTEN_PID / LISTEN_FDS, fds from 3.
 * Outside systemd every function does nothing. Loop thread only. */
#ifndef MPDD_NOTIFY_H
#define MPDD_NOTIFY_H

/* Sends "READY=1\nSTATUS=<status>". */
void mpdd_notify_ready(const char *status);
/* Sends "RELOADING=1\nMONOTONIC_USEC=<now>". */
void mpdd_notify_reloading(void);
void mpdd_notify_stopping(void);
void mpdd_notify_watchdog(void);
void mpdd_notify_status(const char *status);
/* Sends a raw message; returns 0, or -1 when there is no NOTIFY_SOCKET or
 * the send failed. */
int mpdd_notify(const char *msg);
/* Listening sockets passed to this process (fds 3..), 0 if none. Unsets
 * the variables so children do not inherit them. */
int mpdd_listen_fds(void);
/* Seconds between watchdog pings systemd expects (WATCHDOG_USEC for this
 * process), or 0. */
double mpdd_watchdog_seconds(void);

#endif
