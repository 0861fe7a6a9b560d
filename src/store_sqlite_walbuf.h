/* store_sqlite_walbuf: the writer connection's VFS that writes a commit's WAL frames down in one
 * write at the WAL sync (store_sqlite_walbuf.c says why, and why with synchronous = FULL only). */
#ifndef STORE_SQLITE_WALBUF_H
#define STORE_SQLITE_WALBUF_H

#include <sqlite3.h>

#define STORE_SQLITE_WALBUF_VFS "hookd-walbuf"

/* The name of the buffering VFS over SQLite's default one, registered on first use (any
 * thread), or NULL if it could not be registered (then open with the default VFS). */
const char *store_sqlite_walbuf_vfs(void);

/* Registers a buffering VFS called name over the VFS called below_name (NULL: the default); not
 * made the default. Tests stack it over a VFS of their own. 0, -ENOENT (no such VFS below),
 * -EEXIST (name taken), -ENOMEM or -EIO. name must outlive the process's use of SQLite. */
int store_sqlite_walbuf_register(const char *name, const char *below_name);

#endif
