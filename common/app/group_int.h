/* group_int.h - private to app/group*.c: the snapshot of the group's shared model
 * (group_snap.c), written by group.c's step and revocation, loaded by grp_new. */
#ifndef M3_GROUP_INT_H
#define M3_GROUP_INT_H
#include <stddef.h>
#include <stdint.h>
#include "engine/model.h"
#include "stream/kio.h"

#define GRP__SHARD_BYTES (4 << 20)   /* a snapshot's shards: well under GRP_MAX_MESSAGE */

/* What a snapshot covers: the model-topic offset below which every blob is in it (-1:
 * none read yet), and of its writer's own blobs those with a sequence number below
 * writer_seq_end (they may sit above that offset, in flight when it was written). */
typedef struct {
    uint64_t id;              /* (written_ms << 20) | (writer & 0xfffff): newer is larger */
    int64_t model_offset;
    uint32_t writer;
    uint64_t writer_seq_end;
    int64_t written_ms;       /* the writer's real clock */
    uint64_t rows;            /* shared rows in it */
    size_t bytes;             /* the payload, shards' headers not counted */
    uint32_t version;         /* its format: 2, or 1 (no Adam state, no group state) */
    unsigned char *state;     /* loaded: the group's state at model_offset (group.c's
                                 bytes, malloc'd: the caller frees), NULL if none */
    size_t state_len;
} grp__snap_meta;

/* Write model m's shared part (dense parameters with Adam's moments and step, every
 * shared embedding row in memory) and state (state_len bytes of the group's state at
 * meta's offset, opaque here) as shards then a manifest to topic (compacted: keys
 * "shard.<k>", "manifest"), with meta's offset, writer and writer_seq_end; meta's id,
 * written_ms, rows, bytes and version are filled. Returns 0, or -1 with errstr (out of
 * memory, non-finite parameters, the producer refused). */
int grp__snap_write(kio_producer *p, const char *topic, m3_model *m, grp__snap_meta *meta,
                    const void *state, size_t state_len, char *errstr, size_t errstr_size);

/* Read topic (the reader must not hold it) from its beginning to its end and load the
 * newest complete snapshot into m: the dense parameters replaced (format 2: with Adam's
 * moments and step; format 1: the parameters alone), each shared row created or replaced
 * (user rows are never in one); meta->state gets the group's state. Returns 1 (meta filled), 0 when the
 * topic holds no snapshot, or -1 with errstr when the newest is refused (incomplete,
 * corrupt, another configuration or format: m unchanged) or the topic cannot be read. */
int grp__snap_load(kio_reader *r, const char *topic, m3_model *m, grp__snap_meta *meta,
                   int timeout_ms, char *errstr, size_t errstr_size);

#endif
