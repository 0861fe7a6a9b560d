/* store_sqlite_walbuf: a SQLite VFS over another one (the default unix VFS) that gathers a
 * connection's WAL writes and hands them down in one write when SQLite syncs the WAL. SQLite
 * writes each WAL frame as two writes (its 24-byte header, then the page), so a commit of 25
 * frames costs 50 pwrite(2) calls; through this VFS it costs one (or one per ~124 KiB). Used
 * only by the writer thread's connection, and only with synchronous = FULL (see below). Every
 * other file and method goes straight to the VFS below. Registered once, by any thread. */
#include "store_sqlite_walbuf.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Why FULL only: with synchronous = FULL SQLite syncs the WAL at every commit, after writing
 * the frames and before publishing them in the wal-index (wal.c, walFrames), so at the moment
 * another connection can see a commit its frames have left the buffer. With NORMAL nothing is
 * synced at commit and another connection would read frames still in this buffer.
 *
 * What is buffered: contiguous writes to a file SQLite opened as a WAL (SQLITE_OPEN_WAL), up
 * to WALBUF_CAP bytes. Anything that reads, syncs, truncates, sizes, controls or closes the
 * file first writes the buffer down; so does a write that does not continue it, and the release
 * of the WAL write lock (walbuf_shm_lock: after a rollback, before another connection may
 * write the WAL). A WAL whose database file is not ours is not buffered. A failed
 * write-down is returned to SQLite from the call that caused it (xSync at a commit: the commit
 * fails and nothing of it is published) and from every later call until it succeeds or the
 * write lock is released (write_down). WALBUF_CAP stays below 0x1ffff because the unix VFS
 * writes at most that many bytes in one call. */
#define WALBUF_CAP 0x1f000

struct walbuf_vfs {
	sqlite3_vfs base;
	sqlite3_vfs *below;
};

struct walbuf_file {
	sqlite3_file base;
	sqlite3_file *below; /* the file of the VFS below, right after this struct */
	unsigned char *buf;  /* NULL: not a WAL, every write goes down at once */
	sqlite3_int64 start; /* file offset of buf[0] */
	int len;
	struct walbuf_file *wal; /* a database file: its connection's WAL while open */
	struct walbuf_file *db;	 /* a WAL: its database file */
};

#define BELOW(p) (((struct walbuf_file *)(p))->below)

static int write_down(struct walbuf_file *f)
{
	int rc;

	if (f->len == 0)
		return SQLITE_OK;
	rc = f->below->pMethods->xWrite(f->below, f->buf, f->len, f->start);
	/* On failure the frames stay: SQLite was told they were written, so every later call that
	 * needs them tries again (and fails the same way while the disk is full, rather than read
	 * around them or commit without them). The write lock's release drops them: frames still
	 * here then are uncommitted, since a commit needs its sync, which needs this write. */
	if (rc == SQLITE_OK)
		f->len = 0;
	return rc;
}

static int walbuf_close(sqlite3_file *p)
{
	struct walbuf_file *f = (struct walbuf_file *)p;
	int rc = write_down(f);
	int rc_close = f->below->pMethods->xClose(f->below);

	if (f->db != NULL)
		f->db->wal = NULL;
	if (f->wal != NULL)
		f->wal->db = NULL;
	free(f->buf);
	f->buf = NULL;
	return rc != SQLITE_OK ? rc : rc_close;
}

static int walbuf_read(sqlite3_file *p, void *out, int n, sqlite3_int64 off)
{
	int rc = write_down((struct walbuf_file *)p);

	return rc != SQLITE_OK ? rc : BELOW(p)->pMethods->xRead(BELOW(p), out, n, off);
}

static int walbuf_write(sqlite3_file *p, const void *data, int n, sqlite3_int64 off)
{
	struct walbuf_file *f = (struct walbuf_file *)p;
	int rc;

	if (f->buf == NULL)
		return f->below->pMethods->xWrite(f->below, data, n, off);
	if (f->len > 0 && (off != f->start + f->len || n > WALBUF_CAP - f->len)) {
		rc = write_down(f);
		if (rc != SQLITE_OK)
			return rc;
	}
	if (n > WALBUF_CAP)
		return f->below->pMethods->xWrite(f->below, data, n, off);
	if (f->len == 0)
		f->start = off;
	memcpy(f->buf + f->len, data, (size_t)n);
	f->len += n;
	return SQLITE_OK;
}

static int walbuf_truncate(sqlite3_file *p, sqlite3_int64 size)
{
	int rc = write_down((struct walbuf_file *)p);

	return rc != SQLITE_OK ? rc : BELOW(p)->pMethods->xTruncate(BELOW(p), size);
}

static int walbuf_sync(sqlite3_file *p, int flags)
{
	int rc = write_down((struct walbuf_file *)p);

	return rc != SQLITE_OK ? rc : BELOW(p)->pMethods->xSync(BELOW(p), flags);
}

static int walbuf_file_size(sqlite3_file *p, sqlite3_int64 *ret_size)
{
	int rc = write_down((struct walbuf_file *)p);

	return rc != SQLITE_OK ? rc : BELOW(p)->pMethods->xFileSize(BELOW(p), ret_size);
}

static int walbuf_file_control(sqlite3_file *p, int op, void *arg)
{
	int rc = write_down((struct walbuf_file *)p);

	return rc != SQLITE_OK ? rc : BELOW(p)->pMethods->xFileControl(BELOW(p), op, arg);
}

static int walbuf_lock(sqlite3_file *p, int level)
{
	return BELOW(p)->pMethods->xLock(BELOW(p), level);
}

static int walbuf_unlock(sqlite3_file *p, int level)
{
	return BELOW(p)->pMethods->xUnlock(BELOW(p), level);
}

static int walbuf_check_reserved(sqlite3_file *p, int *ret)
{
	return BELOW(p)->pMethods->xCheckReservedLock(BELOW(p), ret);
}

static int walbuf_sector_size(sqlite3_file *p)
{
	return BELOW(p)->pMethods->xSectorSize(BELOW(p));
}

static int walbuf_device(sqlite3_file *p)
{
	return BELOW(p)->pMethods->xDeviceCharacteristics(BELOW(p));
}

static int walbuf_shm_map(sqlite3_file *p, int region, int size, int extend, void volatile **ret)
{
	return BELOW(p)->pMethods->xShmMap(BELOW(p), region, size, extend, ret);
}

/* SQLite's WAL write lock is slot 0 of the database file's shared-memory locks (wal.c,
 * WAL_WRITE_LOCK). Until it is released no other connection writes the WAL; after, another may
 * write at the offsets of frames this connection wrote and rolled back. Those frames are
 * written down before the release, as they would have been without the buffer, so that no
 * later write-down can land on another connection's frames. */
static int walbuf_shm_lock(sqlite3_file *p, int offset, int n, int flags)
{
	struct walbuf_file *f = (struct walbuf_file *)p;

	if ((flags & SQLITE_SHM_UNLOCK) && offset == 0 && n > 0 && f->wal != NULL) {
		(void)write_down(f->wal); /* uncommitted frames: a failure loses nothing */
		f->wal->len = 0;
	}
	return BELOW(p)->pMethods->xShmLock(BELOW(p), offset, n, flags);
}

static void walbuf_shm_barrier(sqlite3_file *p)
{
	BELOW(p)->pMethods->xShmBarrier(BELOW(p));
}

static int walbuf_shm_unmap(sqlite3_file *p, int delete_flag)
{
	return BELOW(p)->pMethods->xShmUnmap(BELOW(p), delete_flag);
}

static int walbuf_fetch(sqlite3_file *p, sqlite3_int64 off, int n, void **ret)
{
	return BELOW(p)->pMethods->xFetch(BELOW(p), off, n, ret);
}

static int walbuf_unfetch(sqlite3_file *p, sqlite3_int64 off, void *ptr)
{
	return BELOW(p)->pMethods->xUnfetch(BELOW(p), off, ptr);
}

/* One table per version of the below file's methods (version 1 has no shared memory, version
 * 2 no memory mapping): ours must not claim what it cannot pass down. */
#define WALBUF_METHODS(version)                                                                 \
	{                                                                                       \
		version, walbuf_close, walbuf_read, walbuf_write, walbuf_truncate, walbuf_sync, \
			walbuf_file_size, walbuf_lock, walbuf_unlock, walbuf_check_reserved,    \
			walbuf_file_control, walbuf_sector_size, walbuf_device, walbuf_shm_map, \
			walbuf_shm_lock, walbuf_shm_barrier, walbuf_shm_unmap, walbuf_fetch,    \
			walbuf_unfetch                                                          \
	}
static const sqlite3_io_methods walbuf_methods[3] = {WALBUF_METHODS(1), WALBUF_METHODS(2),
						     WALBUF_METHODS(3)};

static bool is_walbuf_file(const sqlite3_file *p)
{
	return p->pMethods >= &walbuf_methods[0] && p->pMethods <= &walbuf_methods[2];
}

static int walbuf_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags,
		       int *ret_flags)
{
	sqlite3_vfs *below = ((struct walbuf_vfs *)vfs)->below;
	struct walbuf_file *f = (struct walbuf_file *)p;
	int rc, version;

	memset(f, 0, sizeof(*f));
	f->below = (sqlite3_file *)&f[1];
	rc = below->xOpen(below, name, f->below, flags, ret_flags);
	if (rc != SQLITE_OK) {
		/* SQLite calls xClose only if pMethods is set: close what the VFS below opened */
		if (f->below->pMethods != NULL)
			f->below->pMethods->xClose(f->below);
		p->pMethods = NULL;
		return rc;
	}
	if (flags & SQLITE_OPEN_WAL) {
		/* the database file this WAL belongs to, opened through this VFS before it */
		sqlite3_file *db = name != NULL ? sqlite3_database_file_object(name) : NULL;

		f->buf = malloc(WALBUF_CAP);
		if (f->buf == NULL || db == NULL || !is_walbuf_file(db)) {
			/* no buffer without the write lock's release to write it down at */
			free(f->buf);
			f->buf = NULL;
		} else {
			f->db = (struct walbuf_file *)db;
			f->db->wal = f;
		}
	}
	version = f->below->pMethods->iVersion;
	p->pMethods = &walbuf_methods[(version < 1 ? 1 : version > 3 ? 3 : version) - 1];
	return SQLITE_OK;
}

#define VFS_BELOW(v) (((struct walbuf_vfs *)(v))->below)

static int walbuf_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
	return VFS_BELOW(v)->xDelete(VFS_BELOW(v), name, sync_dir);
}

static int walbuf_access(sqlite3_vfs *v, const char *name, int flags, int *ret)
{
	return VFS_BELOW(v)->xAccess(VFS_BELOW(v), name, flags, ret);
}

static int walbuf_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
	return VFS_BELOW(v)->xFullPathname(VFS_BELOW(v), name, n, out);
}

static void *walbuf_dl_open(sqlite3_vfs *v, const char *name)
{
	return VFS_BELOW(v)->xDlOpen(VFS_BELOW(v), name);
}

static void walbuf_dl_error(sqlite3_vfs *v, int n, char *out)
{
	VFS_BELOW(v)->xDlError(VFS_BELOW(v), n, out);
}

static void (*walbuf_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
	return VFS_BELOW(v)->xDlSym(VFS_BELOW(v), h, sym);
}

static void walbuf_dl_close(sqlite3_vfs *v, void *h)
{
	VFS_BELOW(v)->xDlClose(VFS_BELOW(v), h);
}

static int walbuf_randomness(sqlite3_vfs *v, int n, char *out)
{
	return VFS_BELOW(v)->xRandomness(VFS_BELOW(v), n, out);
}

static int walbuf_sleep(sqlite3_vfs *v, int us)
{
	return VFS_BELOW(v)->xSleep(VFS_BELOW(v), us);
}

static int walbuf_current_time(sqlite3_vfs *v, double *ret)
{
	return VFS_BELOW(v)->xCurrentTime(VFS_BELOW(v), ret);
}

static int walbuf_last_error(sqlite3_vfs *v, int n, char *out)
{
	return VFS_BELOW(v)->xGetLastError(VFS_BELOW(v), n, out);
}

static int walbuf_current_time64(sqlite3_vfs *v, sqlite3_int64 *ret)
{
	double day;
	int rc;

	if (VFS_BELOW(v)->iVersion >= 2 && VFS_BELOW(v)->xCurrentTimeInt64 != NULL)
		return VFS_BELOW(v)->xCurrentTimeInt64(VFS_BELOW(v), ret);
	rc = VFS_BELOW(v)->xCurrentTime(VFS_BELOW(v), &day);
	*ret = (sqlite3_int64)(day * 86400000.0);
	return rc;
}

int store_sqlite_walbuf_register(const char *name, const char *below_name)
{
	sqlite3_vfs *below = sqlite3_vfs_find(below_name);
	struct walbuf_vfs *w;
	int rc;

	if (below == NULL)
		return -ENOENT;
	if (sqlite3_vfs_find(name) != NULL)
		return -EEXIST;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	/* lives as long as the process: SQLite keeps a pointer to it */
	w->below = below;
	w->base = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(struct walbuf_file) + below->szOsFile,
		.mxPathname = below->mxPathname,
		.zName = name,
		.xOpen = walbuf_open,
		.xDelete = walbuf_delete,
		.xAccess = walbuf_access,
		.xFullPathname = walbuf_full_pathname,
		.xDlOpen = walbuf_dl_open,
		.xDlError = walbuf_dl_error,
		.xDlSym = walbuf_dl_sym,
		.xDlClose = walbuf_dl_close,
		.xRandomness = walbuf_randomness,
		.xSleep = walbuf_sleep,
		.xCurrentTime = walbuf_current_time,
		.xGetLastError = walbuf_last_error,
		.xCurrentTimeInt64 = walbuf_current_time64,
	};
	rc = sqlite3_vfs_register(&w->base, 0);
	if (rc != SQLITE_OK) {
		free(w);
		return rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
	}
	return 0;
}

static pthread_once_t walbuf_once = PTHREAD_ONCE_INIT;
static int walbuf_registered = -EIO;

static void register_default(void)
{
	walbuf_registered = store_sqlite_walbuf_register(STORE_SQLITE_WALBUF_VFS, NULL);
}

const char *store_sqlite_walbuf_vfs(void)
{
	pthread_once(&walbuf_once, register_default);
	return walbuf_registered == 0 ? STORE_SQLITE_WALBUF_VFS : NULL;
}
