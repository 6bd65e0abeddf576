/* The journal's file writes and fsyncs, run without the GIL.
 *
 * The reactor queues jobs (lists of appends, fdatasyncs and write-outs)
 * with submit(); the writer thread, inside serve(), takes every job queued
 * so far as one group: it runs their appends in order, then fdatasyncs
 * each file the group asked to sync, once, several files at once on its
 * syncer threads, then has the kernel start writing out the files it was
 * asked to (sync_file_range, not waited for), and only then reports the
 * jobs done.  The reactor learns of it through an eventfd, without the
 * thread ever needing the GIL, and reads the outcomes with poll().  After a failure
 * the engine runs nothing more (jobs still queued, and jobs submitted
 * later, come back with ECANCELED) until resume().
 *
 * run() runs one job at once on the caller's thread, without the GIL,
 * while the engine has nothing queued: a lone durable write then costs no
 * wake-up of a thread, neither of the engine's nor of the reactor's.
 * run_and_reply() also sends the replies that wait for that job to their
 * sockets the moment it is durable, before the caller runs any Python;
 * reply() sends those of jobs taken back from the engine's thread, as the
 * caller takes them back.
 *
 * A sync may be "shared" (a (fd, False) op): the job says that the file's
 * new bytes only overwrite blocks that an earlier fdatasync made durable,
 * so that the file needs no metadata written, only its data and a flush
 * of the disk's cache.  A group that syncs several files starts writing
 * them all out at once, waits for the shared ones (sync_file_range), and
 * only once every one of those has returned fdatasyncs the others, or one
 * of them: that fdatasync's cache flush covers the bytes already written
 * out.  A disk takes one flush at a time, so sixteen files' fdatasyncs
 * cost sixteen flushes, even when issued at once, where this costs one.
 *
 * That is only sound where every fdatasync ends with a cache flush issued
 * after it was called, whatever the file (so covering every write that
 * completed before it), and where an overwrite in place needs no
 * metadata: ext4 and xfs (flush_shared() says so of a file system).  The
 * engine is told once, when made, the device whose files may share a
 * flush (shared_device, that of the data directory, if flush_shared()
 * said yes of it); a shared sync of a file on any other device, and every
 * one when there is no such device, is an fdatasync of its own.  Which
 * device a file is on the engine asks (fstat) of each (fd, False) shared
 * sync; an (fd, True) one says that the caller knows the file to be on
 * shared_device (it asked once, when it opened the file), and it is not
 * asked again.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#if PY_VERSION_HEX < 0x030D0000
/* Public from Python 3.13 on, when the private name went away. */
#define PyLong_AsInt _PyLong_AsInt
#endif

#define EXT4_MAGIC 0xEF53
#define XFS_MAGIC 0x58465342

typedef struct {
    int fd;
    int sync;             /* 0: append data; 1: fdatasync fd; 2: shared;
                             3: shared, known to be on the shared device;
                             4: start writing out fd's first len bytes */
    const char *data;
    Py_ssize_t len;
} Op;

typedef struct Job {
    struct Job *next;
    PyObject *ops;        /* the list, which keeps the bytes alive */
    Op *op;
    Py_ssize_t nops;
    int notify;
    int result;           /* 0, or an errno */
} Job;

#define MAX_SYNCERS 8

/* The threads that fdatasync the files of one group at once: one fsync
 * after another costs the sum of their latencies, while the disk takes
 * several at once for little more than one.  The thread running the group
 * syncs too, alongside them; each takes the next file not yet taken. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t go;            /* a group's files to sync, or stop */
    pthread_cond_t done;          /* the last file of a group is synced */
    const int *fds;
    int count, next, finished, error;
    unsigned long generation;
    int started, stop;
    pthread_t threads[MAX_SYNCERS];
} Syncers;

typedef struct {
    PyObject_HEAD
    Syncers syncers;
    unsigned long parallel;      /* groups whose files were synced at once */
    pthread_mutex_t lock;
    pthread_cond_t work;
    int notify_fd;
    Job *queued, *queued_tail;   /* waiting for the thread */
    Job *done, *done_tail;       /* finished, for poll() */
    int wake;                    /* the reactor waits: always notify */
    int halted;
    int interrupts;
    int idle;                    /* the thread waits for work */
    int running;                 /* a group runs (serve() or run()) */
    unsigned long shared;        /* syncs covered by another file's flush */
    unsigned long started;       /* files written out together, shared or not */
    int share;                   /* files on device may share a flush */
    dev_t device;
} Engine;

static void
free_job(Job *job)
{
    Py_XDECREF(job->ops);
    PyMem_RawFree(job->op);
    PyMem_RawFree(job);
}

static void
append(Job **head, Job **tail, Job *job)
{
    job->next = NULL;
    if (*tail)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static int
Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"notify_fd", "shared_device", NULL};
    PyObject *device = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|O", names, &self->notify_fd,
                                     &device))
        return -1;
    if (device != Py_None) {
        unsigned long long value = PyLong_AsUnsignedLongLong(device);
        if (value == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        self->share = 1;
        self->device = (dev_t)value;
    }
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->work, NULL);
    pthread_mutex_init(&self->syncers.lock, NULL);
    pthread_cond_init(&self->syncers.go, NULL);
    pthread_cond_init(&self->syncers.done, NULL);
    return 0;
}

static void stop_syncers(Syncers *syncers);

static void
Engine_dealloc(Engine *self)
{
    Job *job, *next;
    for (job = self->queued; job; job = next) {
        next = job->next;
        free_job(job);
    }
    for (job = self->done; job; job = next) {
        next = job->next;
        free_job(job);
    }
    stop_syncers(&self->syncers);
    pthread_mutex_destroy(&self->lock);
    pthread_cond_destroy(&self->work);
    pthread_mutex_destroy(&self->syncers.lock);
    pthread_cond_destroy(&self->syncers.go);
    pthread_cond_destroy(&self->syncers.done);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The ops of a job, from a list of (fd, bytes) appends, (fd, None)
 * fdatasyncs, (fd, False) and (fd, True) shared syncs and (fd, end)
 * write-outs; NULL with an exception set. */
static Op *
parse_ops(PyObject *ops, Py_ssize_t *count)
{
    Py_ssize_t n = PyList_GET_SIZE(ops);
    Op *op = PyMem_RawCalloc(n ? n : 1, sizeof(Op));
    if (!op) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(ops, i), *data;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            goto bad;
        op[i].fd = PyLong_AsInt(PyTuple_GET_ITEM(item, 0));
        if (op[i].fd == -1 && PyErr_Occurred())
            goto fail;
        data = PyTuple_GET_ITEM(item, 1);
        if (data == Py_None) {
            op[i].sync = 1;
        } else if (data == Py_False) {
            op[i].sync = 2;
        } else if (data == Py_True) {
            op[i].sync = 3;
        } else if (PyBytes_Check(data)) {
            op[i].data = PyBytes_AS_STRING(data);
            op[i].len = PyBytes_GET_SIZE(data);
        } else if (PyLong_CheckExact(data)) {
            op[i].sync = 4;
            op[i].len = PyLong_AsSsize_t(data);
            if (op[i].len < 0) {
                if (PyErr_Occurred())
                    goto fail;
                goto bad;
            }
        } else {
            goto bad;
        }
    }
    *count = n;
    return op;
bad:
    PyErr_SetString(PyExc_TypeError,
                    "an op is a (fd, bytes, None, a bool or an end) tuple");
fail:
    PyMem_RawFree(op);
    return NULL;
}

static PyObject *
Engine_submit(Engine *self, PyObject *args)
{
    PyObject *ops;
    int notify;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!p", &PyList_Type, &ops, &notify))
        return NULL;
    Op *op = parse_ops(ops, &n);
    if (!op)
        return NULL;
    Job *job = PyMem_RawCalloc(1, sizeof(Job));
    if (!job) {
        PyMem_RawFree(op);
        return PyErr_NoMemory();
    }
    Py_INCREF(ops);
    job->ops = ops;
    job->op = op;
    job->nops = n;
    job->notify = notify;
    pthread_mutex_lock(&self->lock);
    if (self->halted) {
        job->result = ECANCELED;
        append(&self->done, &self->done_tail, job);
    } else {
        append(&self->queued, &self->queued_tail, job);
        if (self->idle)
            pthread_cond_signal(&self->work);
    }
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
Engine_poll(Engine *self, PyObject *args)
{
    int wake;
    if (!PyArg_ParseTuple(args, "p", &wake))
        return NULL;
    pthread_mutex_lock(&self->lock);
    Job *done = self->done;
    self->done = self->done_tail = NULL;
    if (!done && wake)
        self->wake = 1;
    pthread_mutex_unlock(&self->lock);
    PyObject *results = PyList_New(0);
    Job *next;
    for (Job *job = done; job; job = next) {
        next = job->next;
        if (results) {
            PyObject *result = PyLong_FromLong(job->result);
            if (!result || PyList_Append(results, result) < 0)
                Py_CLEAR(results);
            Py_XDECREF(result);
        }
        free_job(job);
    }
    return results;
}

static PyObject *
Engine_resume(Engine *self, PyObject *unused)
{
    pthread_mutex_lock(&self->lock);
    self->halted = 0;
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

static PyObject *
Engine_interrupt(Engine *self, PyObject *unused)
{
    pthread_mutex_lock(&self->lock);
    self->interrupts++;
    pthread_cond_signal(&self->work);
    pthread_mutex_unlock(&self->lock);
    Py_RETURN_NONE;
}

#define MAX_IOV 64

/* Appends iov[0..count) to fd, however many writes it takes. */
static int
append_all(int fd, struct iovec *iov, int count)
{
    while (count > 0) {
        ssize_t w = writev(fd, iov, count);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        while (count > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* With the syncers' lock held: sync the files of the current group that
 * nobody has taken yet, one at a time, until none is left. */
static void
sync_taken(Syncers *syncers)
{
    while (syncers->next < syncers->count) {
        int fd = syncers->fds[syncers->next++];
        pthread_mutex_unlock(&syncers->lock);
        int error = fdatasync(fd) != 0 ? errno : 0;
        pthread_mutex_lock(&syncers->lock);
        if (error && !syncers->error)
            syncers->error = error;
        if (++syncers->finished == syncers->count)
            pthread_cond_signal(&syncers->done);
    }
}

static void *
syncer_main(void *arg)
{
    Syncers *syncers = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&syncers->lock);
    for (;;) {
        while (!syncers->stop && syncers->generation == seen)
            pthread_cond_wait(&syncers->go, &syncers->lock);
        if (syncers->stop)
            break;
        seen = syncers->generation;
        sync_taken(syncers);
    }
    pthread_mutex_unlock(&syncers->lock);
    return NULL;
}

static void
start_syncers(Syncers *syncers)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    /* Fewer than asked for is fine: the group's own thread syncs too. */
    while (syncers->started < MAX_SYNCERS &&
           pthread_create(&syncers->threads[syncers->started], &attr,
                          syncer_main, syncers) == 0)
        syncers->started++;
    pthread_attr_destroy(&attr);
}

static void
stop_syncers(Syncers *syncers)
{
    pthread_mutex_lock(&syncers->lock);
    syncers->stop = 1;
    pthread_cond_broadcast(&syncers->go);
    pthread_mutex_unlock(&syncers->lock);
    for (int k = 0; k < syncers->started; k++)
        pthread_join(syncers->threads[k], NULL);
    syncers->started = 0;
}

/* fdatasyncs fds[0..count), several at once when there are several;
 * returns only once every one has returned: 0 or the first errno. */
static int
sync_parallel(Engine *self, const int *fds, int count)
{
    Syncers *syncers = &self->syncers;
    if (count == 1)
        return fdatasync(fds[0]) != 0 ? errno : 0;
    pthread_mutex_lock(&syncers->lock);
    if (!syncers->started)
        start_syncers(syncers);
    syncers->fds = fds;
    syncers->count = count;
    syncers->next = syncers->finished = syncers->error = 0;
    syncers->generation++;
    if (syncers->started) {
        self->parallel++;
        pthread_cond_broadcast(&syncers->go);
    }
    sync_taken(syncers);
    while (syncers->finished < syncers->count)
        pthread_cond_wait(&syncers->done, &syncers->lock);
    int error = syncers->error;
    /* Nothing of this group may be taken once it is over. */
    syncers->fds = NULL;
    syncers->count = syncers->next = syncers->finished = 0;
    pthread_mutex_unlock(&syncers->lock);
    return error;
}

/* Whether fd is a file on device dev. */
static int
on_device(int fd, dev_t dev)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == dev;
}

/* Syncs the files of a group: fds[k] in full, or shared when shared[k]
 * (see "shared" above: 1, if on the shared device; 2, known to be on it).
 * Returns 0 or the first errno. */
static int
sync_files(Engine *self, int *fds, const int *shared, int count)
{
    if (count == 1)
        return fdatasync(fds[0]) != 0 ? errno : 0;
#ifdef SYNC_FILE_RANGE_WRITE
    int full[64], light[64];
    int nfull = 0, nlight = 0;
    int known[64];
    for (int k = 0; k < count; k++) {
        if (shared[k]) {
            known[nlight] = shared[k] == 2;
            light[nlight++] = fds[k];
        } else {
            full[nfull++] = fds[k];
        }
    }
    if (nlight > 0 && !self->share) {
        /* No file here may share a flush: each is synced in full. */
        while (nlight > 0)
            full[nfull++] = light[--nlight];
    }
    if (nlight > 0) {
        int kept = 0, anchored = 0;
        for (int k = 0; k < nlight; k++) {
            if (known[k] || on_device(light[k], self->device))
                light[kept++] = light[k];
            else
                full[nfull++] = light[k];
        }
        nlight = kept;
        /* The flush that covers them is that of an fdatasync on their
         * device: one of the full ones, or else one of them. */
        for (int k = 0; k < nfull && !anchored; k++)
            anchored = on_device(full[k], self->device);
        if (nlight > 0 && !anchored)
            full[nfull++] = light[--nlight];
        /* Every shared file's write-out started, then waited for: all of
         * it is on the disk (in its cache) before any fdatasync below is
         * issued, each sync_file_range having returned first.  The files
         * to fdatasync start theirs with them (only advice: their
         * fdatasync reports what fails), so that their data goes to the
         * disk beside the others' and not after, and their fdatasync
         * finds little but the flush left to do. */
        unsigned long started = 0;
        for (int k = 0; k < nlight; k++, started++)
            if (sync_file_range(light[k], 0, 0, SYNC_FILE_RANGE_WRITE) != 0)
                return errno;
        for (int k = 0; k < nfull; k++, started++)
            (void)sync_file_range(full[k], 0, 0, SYNC_FILE_RANGE_WRITE);
        pthread_mutex_lock(&self->syncers.lock);
        self->started += started;
        pthread_mutex_unlock(&self->syncers.lock);
        for (int k = 0; k < nlight; k++)
            if (sync_file_range(light[k], 0, 0,
                                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                    SYNC_FILE_RANGE_WAIT_AFTER) != 0)
                return errno;
        if (nlight > 0) {
            pthread_mutex_lock(&self->syncers.lock);
            self->shared += (unsigned long)nlight;
            pthread_mutex_unlock(&self->syncers.lock);
        }
    }
    return sync_parallel(self, full, nfull);
#else
    (void)shared;
    return sync_parallel(self, fds, count);
#endif
}

/* Has the kernel start writing out a file's first len bytes, without
 * waiting for it: only advice, so a failure is no error. */
static void
write_out(int fd, Py_ssize_t len)
{
#ifdef SYNC_FILE_RANGE_WRITE
    if (len > 0)
        sync_file_range(fd, 0, (off64_t)len, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    (void)len;
#endif
}

/* Runs a group, without the lock: every append in order (the appends to
 * one file that follow each other in one writev), then each file to sync
 * once, then the write-outs asked for.  Returns 0 or the first errno. */
static int
run_group(Engine *self, Job *group)
{
    struct iovec iov[MAX_IOV];
    int count = 0, fd = -1, error;
    int synced[64], shared[64], out[64];
    Py_ssize_t out_len[64];
    int nsync = 0, nout = 0;
    for (Job *job = group; job; job = job->next) {
        for (Py_ssize_t i = 0; i < job->nops; i++) {
            Op *op = &job->op[i];
            if (op->sync == 4) {
                if (nout < 64) {
                    out[nout] = op->fd;
                    out_len[nout++] = op->len;
                    continue;
                }
                /* More than that in one group: start this one now, after
                 * the appends before it. */
                if (count > 0 && (error = append_all(fd, iov, count)) != 0)
                    return error;
                count = 0;
                write_out(op->fd, op->len);
                continue;
            }
            if (op->sync) {
                int seen = 0;
                for (int k = 0; k < nsync; k++)
                    if (synced[k] == op->fd) {
                        seen = 1;
                        /* Synced in full if any job asks for that. */
                        if (op->sync == 1)
                            shared[k] = 0;
                        else if (op->sync == 3 && shared[k])
                            shared[k] = 2;
                    }
                if (seen)
                    continue;
                if (nsync < 64) {
                    shared[nsync] = op->sync == 1 ? 0 : op->sync - 1;
                    synced[nsync++] = op->fd;
                    continue;
                }
                /* More files than that in one group: sync this one now. */
                if (count > 0 && (error = append_all(fd, iov, count)) != 0)
                    return error;
                count = 0;
                if (fdatasync(op->fd) != 0)
                    return errno;
                continue;
            }
            if (op->len == 0)
                continue;
            if (count == MAX_IOV || (count > 0 && op->fd != fd)) {
                if ((error = append_all(fd, iov, count)) != 0)
                    return error;
                count = 0;
            }
            fd = op->fd;
            iov[count].iov_base = (void *)op->data;
            iov[count].iov_len = (size_t)op->len;
            count++;
        }
    }
    if (count > 0 && (error = append_all(fd, iov, count)) != 0)
        return error;
    if (nsync > 0 && (error = sync_files(self, synced, shared, nsync)) != 0)
        return error;
    for (int k = 0; k < nout; k++)
        write_out(out[k], out_len[k]);
    return 0;
}

static PyObject *
Engine_serve(Engine *self, PyObject *unused)
{
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    for (;;) {
        if (self->queued) {
            Job *group = self->queued;
            self->queued = self->queued_tail = NULL;
            self->running = 1;
            pthread_mutex_unlock(&self->lock);
            int error = run_group(self, group);
            pthread_mutex_lock(&self->lock);
            self->running = 0;
            int notify = self->wake;
            Job *last = group;
            for (Job *job = group; job; job = job->next) {
                job->result = error;
                notify |= job->notify;
                last = job;
            }
            if (error) {
                self->halted = 1;
                for (Job *job = self->queued; job; job = job->next) {
                    job->result = ECANCELED;
                    last->next = job;
                    last = job;
                }
                self->queued = self->queued_tail = NULL;
            }
            if (self->done_tail)
                self->done_tail->next = group;
            else
                self->done = group;
            self->done_tail = last;
            last->next = NULL;
            if (notify) {
                self->wake = 0;
                uint64_t one = 1;
                while (write(self->notify_fd, &one, sizeof one) < 0 && errno == EINTR)
                    ;
            }
            continue;
        }
        if (self->interrupts) {
            self->interrupts--;
            break;
        }
        self->idle = 1;
        pthread_cond_wait(&self->work, &self->lock);
        self->idle = 0;
    }
    pthread_mutex_unlock(&self->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* Sends all of data to the socket fd without blocking, as far as its
 * buffer takes it; returns the bytes sent.  Nothing here may fail the job
 * that was made durable: a socket that takes nothing (full, or closed by
 * its peer) leaves the rest to the caller. */
static Py_ssize_t
send_reply(int fd, const char *data, Py_ssize_t len)
{
    Py_ssize_t sent = 0;
    while (sent < len) {
        ssize_t w = send(fd, data + sent, (size_t)(len - sent),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        sent += w;
    }
    return sent;
}

/* run() and run_and_reply(): one job at once on the caller's thread, and
 * once all of it is durable, the replies (appends of bytes to sockets, in
 * the same form as ops) sent, their counts of bytes sent put in sent.
 * Returns the job's outcome, or -1 with an exception set. */
static int
run_at_once(Engine *self, PyObject *ops, Op *reply, Py_ssize_t nreplies,
            Py_ssize_t *sent)
{
    Py_ssize_t n;
    Op *op = parse_ops(ops, &n);
    if (!op)
        return -1;
    Job job = {.op = op, .nops = n};
    pthread_mutex_lock(&self->lock);
    int busy = self->queued || self->done || self->running || self->halted;
    if (!busy)
        self->running = 1;
    pthread_mutex_unlock(&self->lock);
    if (busy) {
        PyMem_RawFree(op);
        PyErr_SetString(PyExc_RuntimeError, "the engine has jobs of its own");
        return -1;
    }
    int error;
    /* The lists keep the bytes alive: the caller holds them until we
     * return. */
    Py_BEGIN_ALLOW_THREADS
    error = run_group(self, &job);
    for (Py_ssize_t i = 0; i < nreplies; i++)
        sent[i] = error ? 0 : send_reply(reply[i].fd, reply[i].data, reply[i].len);
    Py_END_ALLOW_THREADS
    pthread_mutex_lock(&self->lock);
    self->running = 0;
    pthread_mutex_unlock(&self->lock);
    PyMem_RawFree(op);
    return error;
}

static PyObject *
Engine_run(Engine *self, PyObject *args)
{
    PyObject *ops;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &ops))
        return NULL;
    int error = run_at_once(self, ops, NULL, 0, NULL);
    return error < 0 ? NULL : PyLong_FromLong(error);
}

/* The replies of a list of (fd, bytes) tuples, each with room for the
 * bytes sent of it; NULL with an exception set. */
static Op *
parse_replies(PyObject *replies, Py_ssize_t *count, Py_ssize_t **sent)
{
    Op *reply = parse_ops(replies, count);
    if (!reply)
        return NULL;
    for (Py_ssize_t i = 0; i < *count; i++)
        if (reply[i].sync) {
            PyErr_SetString(PyExc_TypeError, "a reply is an (fd, bytes) tuple");
            PyMem_RawFree(reply);
            return NULL;
        }
    *sent = PyMem_RawCalloc(*count ? *count : 1, sizeof(Py_ssize_t));
    if (!*sent) {
        PyMem_RawFree(reply);
        PyErr_NoMemory();
        return NULL;
    }
    return reply;
}

/* A list of the n counts of bytes sent. */
static PyObject *
sent_list(const Py_ssize_t *sent, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (!list)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *count = PyLong_FromSsize_t(sent[i]);
        if (!count) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, count);
    }
    return list;
}

static PyObject *
Engine_run_and_reply(Engine *self, PyObject *args)
{
    PyObject *ops, *replies, *counts = NULL;
    Py_ssize_t n, *sent;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &ops, &PyList_Type, &replies))
        return NULL;
    Op *reply = parse_replies(replies, &n, &sent);
    if (!reply)
        return NULL;
    int error = run_at_once(self, ops, reply, n, sent);
    if (error >= 0) {
        PyObject *list = sent_list(sent, n);
        if (list)
            counts = Py_BuildValue("(iN)", error, list);
    }
    PyMem_RawFree(sent);
    PyMem_RawFree(reply);
    return counts;
}

static PyObject *
Engine_reply(Engine *self, PyObject *args)
{
    PyObject *replies, *counts;
    Py_ssize_t n, *sent;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &replies))
        return NULL;
    Op *reply = parse_replies(replies, &n, &sent);
    if (!reply)
        return NULL;
    /* The list keeps the bytes alive until we return. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++)
        sent[i] = send_reply(reply[i].fd, reply[i].data, reply[i].len);
    Py_END_ALLOW_THREADS
    counts = sent_list(sent, n);
    PyMem_RawFree(sent);
    PyMem_RawFree(reply);
    return counts;
}

/* One of the counts the syncers' lock guards, read under it. */
static PyObject *
locked_count(Engine *self, const unsigned long *count)
{
    pthread_mutex_lock(&self->syncers.lock);
    unsigned long value = *count;
    pthread_mutex_unlock(&self->syncers.lock);
    return PyLong_FromUnsignedLong(value);
}

static PyObject *
Engine_shared_syncs(Engine *self, PyObject *unused)
{
    return locked_count(self, &self->shared);
}

static PyObject *
Engine_started_together(Engine *self, PyObject *unused)
{
    return locked_count(self, &self->started);
}

static PyObject *
Engine_parallel_groups(Engine *self, PyObject *unused)
{
    return locked_count(self, &self->parallel);
}

static PyMethodDef Engine_methods[] = {
    {"submit", (PyCFunction)Engine_submit, METH_VARARGS,
     "submit(ops, notify): queue a job of (fd, bytes) appends, (fd, None) "
     "syncs and (fd, False) shared syncs ((fd, True): of a file known to be "
     "on the shared device)."},
    {"poll", (PyCFunction)Engine_poll, METH_VARARGS,
     "poll(wake): the outcomes (0 or an errno) of the jobs finished since the "
     "last poll, in order; with wake, notify when the next group finishes."},
    {"resume", (PyCFunction)Engine_resume, METH_NOARGS,
     "Run jobs again after a failure."},
    {"interrupt", (PyCFunction)Engine_interrupt, METH_NOARGS,
     "Make serve() return once (after the group it runs)."},
    {"run", (PyCFunction)Engine_run, METH_VARARGS,
     "run(ops): run one job now on this thread, without the GIL, and return "
     "its outcome (0 or an errno); only while the engine has no job."},
    {"run_and_reply", (PyCFunction)Engine_run_and_reply, METH_VARARGS,
     "run_and_reply(ops, replies): run() the job, then, if it succeeded, send "
     "each reply, an (fd, bytes) tuple, to its socket without blocking; "
     "returns (outcome, [bytes sent of each reply]), all 0 if it failed."},
    {"reply", (PyCFunction)Engine_reply, METH_VARARGS,
     "reply(replies): send each reply, an (fd, bytes) tuple, to its socket "
     "without blocking, on this thread, as run_and_reply() does; returns "
     "[bytes sent of each reply]."},
    {"shared_syncs", (PyCFunction)Engine_shared_syncs, METH_NOARGS,
     "Syncs made durable by another file's flush (see \"shared\")."},
    {"started_together", (PyCFunction)Engine_started_together, METH_NOARGS,
     "Files of groups with shared syncs whose write-out was started before "
     "any of them was waited for: every file the group syncs, the "
     "fdatasynced ones too."},
    {"parallel_groups", (PyCFunction)Engine_parallel_groups, METH_NOARGS,
     "Groups whose files were handed to the syncer threads, to sync at once."},
    {"serve", (PyCFunction)Engine_serve, METH_NOARGS,
     "Run jobs on the calling thread, without the GIL, until interrupted."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "erq.journal._engine.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Appends and fdatasyncs for the journal writer, without the GIL.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

/* Whether the file system of fd is one where files may share a flush
 * (see "shared" above): ext4 or xfs. */
static PyObject *
flush_shared(PyObject *module, PyObject *arg)
{
    int fd = PyLong_AsInt(arg);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    struct statfs fs;
    int error;
    Py_BEGIN_ALLOW_THREADS
    error = fstatfs(fd, &fs) != 0 ? errno : 0;
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyBool_FromLong(fs.f_type == EXT4_MAGIC || fs.f_type == XFS_MAGIC);
}

static PyMethodDef module_methods[] = {
    {"flush_shared", flush_shared, METH_O,
     "flush_shared(fd): whether fd's file system lets files share a flush: "
     "every fdatasync ends with a cache flush that covers the writes done "
     "before it, and an overwrite in place needs no metadata (ext4, xfs)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "erq.journal._engine",
    .m_doc = "The journal writer's appends and syncs, without the GIL; and "
             "the records of a set and a get (see _hot.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

/* In _hot.c. */
int erq_add_hot(PyObject *module);

PyMODINIT_FUNC
PyInit__engine(void)
{
    if (PyType_Ready(&EngineType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    if (erq_add_hot(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
