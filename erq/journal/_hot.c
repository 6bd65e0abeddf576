/* The journal's two hottest steps, in C: add_record(), the ADD record of
 * every set, and remove(), the REMOVE record of every get with the
 * journal's counts it moves; with bind() (all three in
 * erq.journal._engine).  erq/journal/hot.py says when they run;
 * Journal._add_record and Journal.remove (erq/journal/journal.py) do the
 * same in Python.
 *
 * remove() changes the journal's own objects (_Segment, _Write,
 * SummaryBuilder, Item: classes with __slots__), read and written where
 * their slots are: bind() is given each slot's member descriptor once and
 * keeps its offset, so no attribute is looked up by name per call.  An
 * object of another type than the one bound, a value not of the expected
 * type, or any case but the common one makes remove() return False
 * having changed nothing, and the caller does it all in Python.
 *
 * A record's crc32 over its own few bytes uses a table made once: linking
 * zlib for that would make the optional build need zlib's headers.  An
 * item's data, of any size, goes to zlib.crc32 (bound too), which is
 * faster over more than a few dozen bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

/* The records, as erq.journal.records packs them: "<II" (the size of what
 * follows, its crc32), then for a REMOVE "<BqI" (REMOVE, the item's id,
 * its size), for an ADD "<BqIdd" (ADD, id, flags, expiry or NaN, added)
 * and the item's data. */
#define ADD 1
#define REMOVE 2
#define PAYLOAD 13
#define RECORD (8 + PAYLOAD)
#define ADD_HEAD 29

static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib's crc32 (the same polynomial, start and end). */
static uint32_t
crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static void
put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void
put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

enum {
    ITEM_ID, ITEM_DATA,
    SEG_SIZE, SEG_FILE, SEG_SUMMARY, SEG_FIRST, SEG_LAST, SEG_LIVE, SEG_PINNED,
    WRITE_FILE, WRITE_BUFS,
    RUN_LAST, RUN_LIMIT, RUN_BYTES,
    N_SLOTS
};

/* The type whose slot each is: 0 Item, 1 _Segment, 2 _Write, 3 SummaryBuilder. */
#define OWNER(which) \
    ((which) < SEG_SIZE ? 0 : (which) < WRITE_FILE ? 1 : (which) < RUN_LAST ? 2 : 3)

static Py_ssize_t offsets[N_SLOTS];
static PyTypeObject *item_type, *segment_type, *write_type, *summary_type;
/* zlib.crc32, and what an expiry of None is written as (erq.journal.records'
 * _NAN, so that the bytes are those struct writes). */
static PyObject *zlib_crc32;
static double no_expiry;

#define SLOT(obj, which) (*(PyObject **)((char *)(obj) + offsets[which]))

static PyObject *
bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 + N_SLOTS) {
        PyErr_Format(PyExc_TypeError, "bind() takes %d arguments", 6 + N_SLOTS);
        return NULL;
    }
    if (!PyCallable_Check(args[0]) || !PyFloat_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bind(): crc32, then a float");
        return NULL;
    }
    PyObject *const *types = args + 2, *const *slots = args + 6;
    for (int i = 0; i < 4; i++) {
        if (!PyType_Check(types[i])) {
            PyErr_SetString(PyExc_TypeError,
                            "bind(): Item, _Segment, _Write, SummaryBuilder");
            return NULL;
        }
    }
    Py_ssize_t found[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = slots[i];
        /* A slot of another type would be read at an offset of another
         * layout. */
        if (Py_TYPE(d) != &PyMemberDescr_Type
            || (PyObject *)((PyDescrObject *)d)->d_type != types[OWNER(i)]) {
            PyErr_Format(PyExc_TypeError, "bind(): %R is not a slot of %R", d,
                         types[OWNER(i)]);
            return NULL;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)d)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "bind(): %R is not a plain slot", d);
            return NULL;
        }
        found[i] = member->offset;
    }
    memcpy(offsets, found, sizeof offsets);
    Py_XSETREF(zlib_crc32, Py_NewRef(args[0]));
    no_expiry = PyFloat_AS_DOUBLE(args[1]);
    Py_XSETREF(item_type, (PyTypeObject *)Py_NewRef(types[0]));
    Py_XSETREF(segment_type, (PyTypeObject *)Py_NewRef(types[1]));
    Py_XSETREF(write_type, (PyTypeObject *)Py_NewRef(types[2]));
    Py_XSETREF(summary_type, (PyTypeObject *)Py_NewRef(types[3]));
    Py_RETURN_NONE;
}

/* An int slot's value, if it holds an int: *out, clamped to INT64_MAX. */
static int
int_of(PyObject *value, long long *out)
{
    if (value == NULL || !PyLong_CheckExact(value))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow > 0)
        v = INT64_MAX;
    else if (overflow < 0 || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

static PyObject *
remove_(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "remove() takes 7 arguments");
        return NULL;
    }
    PyObject *item = args[0], *segment = args[1], *write = args[2];
    PyObject *ranged = args[4], *segments = args[5];
    long long segment_size, item_id, seg_size, first_id, last_id, live;
    long long run_last = 0, run_limit = 0, run_bytes = 0, old_live, pinned;
    if (item_type == NULL || Py_TYPE(item) != item_type
        || Py_TYPE(segment) != segment_type || Py_TYPE(write) != write_type
        || !PyList_CheckExact(ranged) || PyList_GET_SIZE(ranged) == 0
        || !PyList_CheckExact(segments) || PyList_GET_SIZE(segments) == 0
        || !int_of(args[3], &segment_size))
        Py_RETURN_FALSE;
    int busy = PyObject_IsTrue(args[6]);
    if (busy != 0) {
        if (busy < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    PyObject *data = SLOT(item, ITEM_DATA);
    PyObject *bufs = SLOT(write, WRITE_BUFS);
    if (!int_of(SLOT(item, ITEM_ID), &item_id) || data == NULL
        || !PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) > UINT32_MAX
        || bufs == NULL || !PyList_CheckExact(bufs)
        || SLOT(write, WRITE_FILE) == NULL
        || SLOT(write, WRITE_FILE) != SLOT(segment, SEG_FILE)
        || !int_of(SLOT(segment, SEG_SIZE), &seg_size) || seg_size >= segment_size)
        Py_RETURN_FALSE;
    long long size = PyBytes_GET_SIZE(data);
    PyObject *summary = SLOT(segment, SEG_SUMMARY);
    if (summary == NULL)
        Py_RETURN_FALSE;
    if (summary != Py_None) {
        if (Py_TYPE(summary) != summary_type
            || !int_of(SLOT(summary, RUN_LAST), &run_last)
            || !int_of(SLOT(summary, RUN_LIMIT), &run_limit)
            || !int_of(SLOT(summary, RUN_BYTES), &run_bytes)
            || item_id != run_last + 1 || item_id >= run_limit)
            Py_RETURN_FALSE;
    }
    PyObject *first = PyList_GET_ITEM(ranged, 0);
    if (Py_TYPE(first) != segment_type
        || !int_of(SLOT(first, SEG_FIRST), &first_id)
        || !int_of(SLOT(first, SEG_LAST), &last_id)
        || !int_of(SLOT(first, SEG_LIVE), &live)
        || item_id < first_id || item_id > last_id)
        Py_RETURN_FALSE;
    if (live > 0)
        live--;
    /* Whether the oldest segment is then dead, and to be compacted: left
     * to the caller, with everything else. */
    PyObject *oldest = PyList_GET_ITEM(segments, 0);
    if (Py_TYPE(oldest) != segment_type)
        Py_RETURN_FALSE;
    if (oldest == first)
        old_live = live;
    else if (!int_of(SLOT(oldest, SEG_LIVE), &old_live))
        Py_RETURN_FALSE;
    if (!int_of(SLOT(oldest, SEG_PINNED), &pinned))
        Py_RETURN_FALSE;
    if (old_live <= pinned && oldest != segment)
        Py_RETURN_FALSE;

    unsigned char buf[RECORD];
    buf[8] = REMOVE;
    put_u64(buf + 9, (uint64_t)item_id);
    put_u32(buf + 17, (uint32_t)size);
    put_u32(buf, PAYLOAD);
    put_u32(buf + 4, crc32_of(buf + 8, PAYLOAD));
    /* Everything is made before anything changes: a failure (no memory)
     * leaves the journal as it was. */
    PyObject *record = PyBytes_FromStringAndSize((const char *)buf, RECORD);
    PyObject *new_size = PyLong_FromLongLong(seg_size + RECORD);
    PyObject *new_live = PyLong_FromLongLong(live);
    PyObject *new_last = summary == Py_None ? Py_NewRef(Py_None)
                                            : PyLong_FromLongLong(item_id);
    PyObject *new_bytes = summary == Py_None ? Py_NewRef(Py_None)
                                             : PyLong_FromLongLong(run_bytes + size);
    if (record == NULL || new_size == NULL || new_live == NULL || new_last == NULL
        || new_bytes == NULL || PyList_Append(bufs, record) < 0) {
        Py_XDECREF(record);
        Py_XDECREF(new_size);
        Py_XDECREF(new_live);
        Py_XDECREF(new_last);
        Py_XDECREF(new_bytes);
        return NULL;
    }
    Py_DECREF(record);
    Py_SETREF(SLOT(segment, SEG_SIZE), new_size);
    Py_SETREF(SLOT(first, SEG_LIVE), new_live);
    if (summary != Py_None) {
        Py_SETREF(SLOT(summary, RUN_LAST), new_last);
        Py_SETREF(SLOT(summary, RUN_BYTES), new_bytes);
    }
    else {
        Py_DECREF(new_last);
        Py_DECREF(new_bytes);
    }
    Py_RETURN_TRUE;
}

/* add_record(item_id, flags, expiry, added, data): an ADD record's frame
 * and head, data not included, as Journal._add_record packs them; None
 * for values it does not take (Python then packs them, or says why it
 * cannot). */
static PyObject *
add_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "add_record() takes 5 arguments");
        return NULL;
    }
    PyObject *expiry = args[2], *data = args[4];
    long long item_id, flags;
    if (zlib_crc32 == NULL || !int_of(args[0], &item_id) || item_id == INT64_MAX
        || !int_of(args[1], &flags) || flags < 0 || flags > UINT32_MAX
        || (expiry != Py_None && !PyFloat_CheckExact(expiry))
        || !PyFloat_CheckExact(args[3]) || !PyBytes_CheckExact(data)
        || PyBytes_GET_SIZE(data) > UINT32_MAX - ADD_HEAD)
        Py_RETURN_NONE;
    unsigned char buf[8 + ADD_HEAD];
    unsigned char *head = buf + 8;
    head[0] = ADD;
    put_u64(head + 1, (uint64_t)item_id);
    put_u32(head + 9, (uint32_t)flags);
    if (PyFloat_Pack8(expiry == Py_None ? no_expiry : PyFloat_AS_DOUBLE(expiry),
                      (char *)head + 13, 1) < 0
        || PyFloat_Pack8(PyFloat_AS_DOUBLE(args[3]), (char *)head + 21, 1) < 0)
        return NULL;
    PyObject *start = PyLong_FromUnsignedLong(crc32_of(head, ADD_HEAD));
    if (start == NULL)
        return NULL;
    PyObject *call[2] = {data, start};
    PyObject *crc = PyObject_Vectorcall(zlib_crc32, call, 2, NULL);
    Py_DECREF(start);
    if (crc == NULL)
        return NULL;
    unsigned long value = PyLong_AsUnsignedLong(crc);
    Py_DECREF(crc);
    if (value == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    put_u32(buf, (uint32_t)(ADD_HEAD + PyBytes_GET_SIZE(data)));
    put_u32(buf + 4, (uint32_t)value);
    return PyBytes_FromStringAndSize((const char *)buf, sizeof buf);
}

static PyMethodDef hot_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL,
     "bind(crc32, nan, Item, _Segment, _Write, SummaryBuilder, *slots): "
     "zlib.crc32, the float an expiry of None is written as, the types, and "
     "the member descriptors of the slots remove() reads and writes, in the "
     "order of erq.journal.hot.SLOTS."},
    {"add_record", (PyCFunction)(void (*)(void))add_record, METH_FASTCALL,
     "add_record(item_id, flags, expiry, added, data): an ADD record's frame "
     "and head (the data not included), or None for values not taken."},
    {"remove", (PyCFunction)(void (*)(void))remove_, METH_FASTCALL,
     "remove(item, segment, write, segment_size, ranged, segments, busy): "
     "Journal.remove's common case, if it is one (True), else nothing done "
     "(False)."},
    {NULL, NULL, 0, NULL},
};

/* Called by the module's init (in _engine.c). */
int
erq_add_hot(PyObject *module)
{
    crc_init();
    return PyModule_AddFunctions(module, hot_methods);
}
