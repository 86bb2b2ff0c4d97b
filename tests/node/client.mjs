#!/usr/bin/env node
// A blobgate.v1 client written only from the contract: @grpc/grpc-js plus
// @grpc/proto-loader loading protos/blobgate/v1/storage.proto at run time (no
// generated code). tests/service/test_node_client.py runs it against a live gateway.
//
//   node client.mjs ADDRESS SCRATCH_DIR KEY_PREFIX
//
// Plaintext unless TLS is asked for, with the variables blobgate-probe reads:
//   BLOBGATE_TLS_CA_FILE      PEM CA certificates to verify the server with
//                             (unset: Node's roots)
//   BLOBGATE_TLS_CERT_FILE    PEM client certificate, for a server in mTLS mode
//   BLOBGATE_TLS_KEY_FILE     its PEM private key (give both or neither)
//   BLOBGATE_TLS_SERVER_NAME  name expected in the server's certificate (unset:
//                             the address's host)
// Any of them set: TLS (grpc.credentials.createSsl). BLOBGATE_CONNECT_TIMEOUT_MS
// bounds the wait for the first connection (default: 30 s).
//
// It uploads a ~3 MiB random object and a small one, downloads them (whole and
// a range), Stats (by version id) and Lists them (their versions too), Copies the small one and BatchDeletes the
// copies, and checks error statuses. It writes the
// bytes it uploaded to SCRATCH_DIR/<name>.bin so the caller can compare them
// with what reached S3, prints one JSON line of results, and exits 0; on any
// mismatch it prints "node client: FAILED: ..." to stderr and exits 1.
//
// Loader options, and what they mean for the field names and values below:
//   keepCase: true   fields keep their proto names (content_type, not contentType)
//   longs: String    int64 arrives as a decimal string ("3158067"), never lossy
//   bytes: Buffer    bytes arrive as Buffer (also proto-loader's default in Node)
//   defaults: true   unset scalars come back as '' / '0' / Buffer(0)
//   oneofs: true     the oneof "message" adds a virtual field naming the member
//                    that is set ("object" / "data"); proto3 `optional` fields
//                    add one too (_size: "size", _crc32c: "crc32c")

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const MiB = 1024 * 1024;
const DEADLINE_MS = 30_000;
const here = path.dirname(fileURLToPath(import.meta.url));
const PROTOS = path.resolve(here, '..', '..', 'protos');

class Mismatch extends Error {}

function check(cond, message) {
  if (!cond) throw new Mismatch(message);
}

function checkEqual(got, want, what) {
  check(got === want, `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

function sha256(buf) {
  return createHash('sha256').update(buf).digest();
}

// CRC32C (Castagnoli), as Checksums.crc32c; Node's zlib only has plain CRC32.
const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32c(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC32C_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function deadline(ms = DEADLINE_MS) {
  return new Date(Date.now() + ms);
}

// Channel credentials and options from the BLOBGATE_TLS_* variables.
function channelSecurity(env) {
  const read = (name) => {
    const file = env[name];
    if (!file) return null;
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Mismatch(`${name}: cannot read ${file}: ${err.message}`);
    }
  };
  const names = ['BLOBGATE_TLS_CA_FILE', 'BLOBGATE_TLS_CERT_FILE', 'BLOBGATE_TLS_KEY_FILE', 'BLOBGATE_TLS_SERVER_NAME'];
  if (!names.some((name) => env[name])) {
    return { credentials: grpc.credentials.createInsecure(), options: {}, tls: false };
  }
  const cert = read('BLOBGATE_TLS_CERT_FILE');
  const key = read('BLOBGATE_TLS_KEY_FILE');
  check(Boolean(cert) === Boolean(key), 'BLOBGATE_TLS_CERT_FILE and BLOBGATE_TLS_KEY_FILE go together');
  const options = {};
  const serverName = env.BLOBGATE_TLS_SERVER_NAME;
  if (serverName) {
    options['grpc.ssl_target_name_override'] = serverName;
    options['grpc.default_authority'] = serverName;
  }
  const credentials = grpc.credentials.createSsl(read('BLOBGATE_TLS_CA_FILE'), key, cert);
  return { credentials, options, tls: true, client_certificate: Boolean(cert) };
}

function loadService() {
  const definition = protoLoader.loadSync('blobgate/v1/storage.proto', {
    includeDirs: [PROTOS],
    keepCase: true,
    longs: String,
    enums: String,
    bytes: Buffer,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition);
  return pkg.blobgate.v1.StorageService;
}

// --- the RPCs, promisified --------------------------------------------------

function upload(client, spec, blob, chunkSize = MiB) {
  return uploadAfter(client, { spec }, blob, chunkSize);
}

// An Upload whose first message is `first`: a spec, or a session's resume.
function uploadAfter(client, first, blob, chunkSize = MiB) {
  return new Promise((resolve, reject) => {
    const seen = { metadata: null };
    const call = client.Upload({ deadline: deadline() }, (err, response) => {
      if (err) reject(Object.assign(err, { seen }));
      else resolve({ response, seen });
    });
    // The server sends "blobgate-upload: accepted" as initial metadata once it
    // took the spec; grpc-js surfaces it as an event. Not waited for: the
    // status is reported correctly either way.
    call.on('metadata', (md) => {
      seen.metadata = md.getMap();
    });
    call.write(first);
    for (let pos = 0; pos < blob.length; pos += chunkSize) {
      call.write({ data: blob.subarray(pos, pos + chunkSize) });
    }
    call.end();
  });
}

function download(client, request) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client.Download(request, { deadline: deadline() });
    call.on('data', (msg) => messages.push(msg));
    call.on('error', reject);
    call.on('end', () => resolve(messages));
  });
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (err, response) =>
      err ? reject(err) : resolve(response),
    );
  });
}

async function expectError(promise, code, what) {
  let response;
  try {
    response = await promise;
  } catch (err) {
    check(
      err.code === code,
      `${what}: want status ${grpc.status[code]} (${code}), got ${grpc.status[err.code]} (${err.code}): ${err.details}`,
    );
    check(typeof err.details === 'string' && err.details.length > 0, `${what}: empty status details`);
    return { code: err.code, name: grpc.status[err.code], details: err.details };
  }
  throw new Mismatch(`${what}: want status ${grpc.status[code]}, got OK: ${JSON.stringify(response)}`);
}

// --- checks -----------------------------------------------------------------

// The Object message as this loader renders it, checked against what we sent.
function checkObject(obj, want, what) {
  check(obj && typeof obj === 'object', `${what}: no object`);
  checkEqual(obj.key, want.key, `${what}.key`);
  checkEqual(typeof obj.size, 'string', `${what}.size type (longs: String)`);
  checkEqual(obj.size, String(want.blob.length), `${what}.size`);
  checkEqual(obj.content_type, want.contentType, `${what}.content_type`);
  check(obj.etag && !obj.etag.includes('"'), `${what}.etag: ${JSON.stringify(obj.etag)}`);
  check(Buffer.isBuffer(obj.checksums.sha256), `${what}.checksums.sha256 is not a Buffer`);
  check(
    obj.checksums.sha256.equals(sha256(want.blob)),
    `${what}.checksums.sha256: got ${obj.checksums.sha256.toString('hex')}, want ${sha256(want.blob).toString('hex')}`,
  );
  checkEqual(obj.checksums._crc32c, 'crc32c', `${what}.checksums._crc32c (presence)`);
  checkEqual(obj.checksums.crc32c, crc32c(want.blob), `${what}.checksums.crc32c`);
  const modified = Number(obj.last_modified.seconds) * 1000;
  check(Math.abs(Date.now() - modified) < 10 * 60_000, `${what}.last_modified: ${JSON.stringify(obj.last_modified)}`);
}

function checkMetadata(obj, want, what) {
  for (const [k, v] of Object.entries(want.metadata)) {
    checkEqual(obj.metadata[k.toLowerCase()], v, `${what}.metadata[${k.toLowerCase()}]`);
  }
  for (const k of Object.keys(obj.metadata)) check(k === k.toLowerCase(), `${what}.metadata key ${k} is not lower-case`);
}

function checkDownload(messages, want, what) {
  check(messages.length >= 1, `${what}: no messages`);
  checkEqual(messages[0].message, 'object', `${what}: first message's oneof`);
  const chunks = messages.slice(1);
  for (const [i, m] of chunks.entries()) {
    checkEqual(m.message, 'data', `${what}: message ${i + 1}'s oneof`);
    check(m.data.length <= MiB, `${what}: message ${i + 1} has ${m.data.length} bytes, over 1 MiB`);
  }
  const got = Buffer.concat(chunks.map((m) => m.data));
  checkEqual(got.length, want.length, `${what}: byte count`);
  check(got.equals(want), `${what}: bytes differ from what was uploaded`);
  return { object: messages[0].object, messages: messages.length, bytes: got.length };
}

// --- main -------------------------------------------------------------------

async function main() {
  const [address, scratch, prefix] = process.argv.slice(2);
  if (!address || !scratch || prefix === undefined) {
    throw new Mismatch('usage: node client.mjs ADDRESS SCRATCH_DIR KEY_PREFIX');
  }
  mkdirSync(scratch, { recursive: true });
  const StorageService = loadService();
  const security = channelSecurity(process.env);
  const client = new StorageService(address, security.credentials, security.options);
  const connectMs = Number(process.env.BLOBGATE_CONNECT_TIMEOUT_MS || DEADLINE_MS);
  await new Promise((resolve, reject) =>
    client.waitForReady(deadline(connectMs), (err) =>
      err ? reject(new Mismatch(`cannot connect to ${address}: ${err.message}`)) : resolve(),
    ),
  );

  const objects = [
    {
      name: 'big',
      key: `${prefix}big.bin`,
      blob: randomBytes(3 * MiB + 12_345),
      contentType: 'application/x-node-test',
      metadata: { Owner: 'Node', 'Build-ID': '42' },
      declareSize: true,
    },
    {
      // No content_type, no declared size: the server guesses from ".txt".
      name: 'small',
      key: `${prefix}notes/small.txt`,
      blob: Buffer.from(`hello from node ${process.version}\n`),
      contentType: 'text/plain',
      metadata: {},
      declareSize: false,
    },
  ];

  const results = { uploads: {}, downloads: {}, errors: {}, shapes: {} };

  for (const o of objects) {
    writeFileSync(path.join(scratch, `${o.name}.bin`), o.blob);
    const spec = {
      key: o.key,
      content_type: o.name === 'big' ? o.contentType : '',
      metadata: o.metadata,
      expected: { sha256: sha256(o.blob) },
    };
    // int64 going out: a Number (safe below 2^53) or a decimal string both work.
    if (o.declareSize) spec.size = o.blob.length;
    const { response, seen } = await upload(client, spec, o.blob);
    checkObject(response.object, o, `Upload(${o.name}).object`);
    checkMetadata(response.object, o, `Upload(${o.name}).object`);
    results.uploads[o.name] = {
      key: o.key,
      size: response.object.size,
      etag: response.object.etag,
      content_type: response.object.content_type,
      sha256: response.object.checksums.sha256.toString('hex'),
      crc32c: response.object.checksums.crc32c,
      metadata: response.object.metadata,
      initial_metadata: seen.metadata,
      version_id: response.object.version_id,
    };
    if (o.name === 'big') {
      results.shapes.upload_response_object_keys = Object.keys(response.object).sort();
      results.shapes.checksums_keys = Object.keys(response.object.checksums).sort();
      results.shapes.size_type = typeof response.object.size;
      results.shapes.last_modified = response.object.last_modified;
    }
  }

  for (const o of objects) {
    const messages = await download(client, { key: o.key });
    const got = checkDownload(messages, o.blob, `Download(${o.name})`);
    checkObject(got.object, o, `Download(${o.name}).object`);
    results.downloads[o.name] = { messages: got.messages, bytes: got.bytes };
    if (o.name === 'big') results.shapes.download_first_message_keys = Object.keys(messages[0]).sort();
  }

  // A range with a negative offset (int64 sent as a string) and a limit.
  const big = objects[0];
  const ranged = await download(client, { key: big.key, offset: '-100000', limit: 70_000 });
  const rangeWant = big.blob.subarray(big.blob.length - 100_000, big.blob.length - 30_000);
  const rangeGot = checkDownload(ranged, rangeWant, 'Download(big, offset=-100000, limit=70000)');
  results.downloads.range = { messages: rangeGot.messages, bytes: rangeGot.bytes, object_size: rangeGot.object.size };

  for (const o of objects) {
    // version_id: the version the Upload answered ('' where the bucket is not
    // versioned, which names the current one).
    const versionId = results.uploads[o.name].version_id;
    const stat = await unary(client, 'Stat', { key: o.key, version_id: versionId });
    checkObject(stat.object, o, `Stat(${o.name}).object`);
    checkMetadata(stat.object, o, `Stat(${o.name}).object`);
    checkEqual(stat.object.etag, results.uploads[o.name].etag, `Stat(${o.name}).object.etag`);
    checkEqual(stat.object.version_id, versionId, `Stat(${o.name}).object.version_id`);
  }
  results.stat = 'ok';
  const versions = await unary(client, 'List', { prefix, versions: true });
  results.versions = versions.objects.map((obj) => [obj.key, obj.version_id, obj.is_latest, obj.is_delete_marker]);

  const listing = await unary(client, 'List', { prefix, page_size: 100 });
  const listed = listing.objects.map((obj) => obj.key).sort();
  for (const o of objects) check(listed.includes(o.key), `List(${prefix}): ${o.key} missing from ${listed}`);
  for (const obj of listing.objects) {
    const o = objects.find((x) => x.key === obj.key);
    if (o) checkEqual(obj.size, String(o.blob.length), `List: ${obj.key} size`);
  }
  checkEqual(listing.next_page_token, '', 'List next_page_token');
  const grouped = await unary(client, 'List', { prefix, delimiter: '/' });
  check(grouped.common_prefixes.includes(`${prefix}notes/`), `List delimiter: ${grouped.common_prefixes}`);
  results.list = { keys: listed, common_prefixes: grouped.common_prefixes };

  // Presign a GET (enum as its name, Duration in) and fetch it with plain HTTP.
  const presigned = await unary(client, 'Presign', {
    key: objects[1].key,
    method: 'HTTP_METHOD_GET',
    expires_in: { seconds: 120 },
  });
  checkEqual(presigned.method, 'HTTP_METHOD_GET', 'Presign.method');
  const expiresAt = Number(presigned.expires_at.seconds) * 1000;
  check(Math.abs(expiresAt - (Date.now() + 120_000)) < 5 * 60_000, `Presign.expires_at: ${JSON.stringify(presigned.expires_at)}`);
  const fetched = await fetch(presigned.url, { headers: presigned.headers });
  check(fetched.ok, `GET presigned URL: HTTP ${fetched.status}`);
  check(Buffer.from(await fetched.arrayBuffer()).equals(objects[1].blob), 'GET presigned URL: bytes differ');
  results.presign = { method: presigned.method, expires_at: presigned.expires_at, http_status: fetched.status };

  results.errors.stat_missing = await expectError(
    unary(client, 'Stat', { key: `${prefix}no-such-key` }),
    grpc.status.NOT_FOUND,
    'Stat(missing key)',
  );
  results.errors.stat_empty_key = await expectError(
    unary(client, 'Stat', { key: '' }),
    grpc.status.INVALID_ARGUMENT,
    'Stat(empty key)',
  );
  results.errors.download_missing = await expectError(
    download(client, { key: `${prefix}no-such-key` }),
    grpc.status.NOT_FOUND,
    'Download(missing key)',
  );
  const bad = randomBytes(2 * MiB);
  results.errors.upload_bad_sha256 = await expectError(
    upload(client, { key: `${prefix}bad-sha.bin`, expected: { sha256: sha256(Buffer.from('other')) } }, bad),
    grpc.status.INVALID_ARGUMENT,
    'Upload(wrong expected sha256)',
  );
  results.errors.upload_wrong_size = await expectError(
    upload(client, { key: `${prefix}bad-size.bin`, size: '5' }, bad),
    grpc.status.OUT_OF_RANGE,
    'Upload(declared size 5, sent 2 MiB)',
  );
  results.errors.upload_empty_key = await expectError(
    upload(client, { key: '' }, bad),
    grpc.status.INVALID_ARGUMENT,
    'Upload(empty key)',
  );
  // A failed Upload commits nothing.
  for (const name of ['bad-sha.bin', 'bad-size.bin']) {
    await expectError(unary(client, 'Stat', { key: `${prefix}${name}` }), grpc.status.NOT_FOUND, `Stat(${name})`);
  }

  results.session = await resumableSession(client, prefix, scratch);
  results.copy = await copyAndBatchDelete(client, prefix, objects[1]);
  results.tags = await tagsAndClass(client, results.copy.replaced);
  results.direct_upload = await directUploadCalls(client, prefix);

  client.close();
  results.ok = true;
  results.node = process.version;
  results.tls = security.tls;
  results.client_certificate = Boolean(security.client_certificate);
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

// A resumable upload session across two calls: the first is cut after a part
// and a bit; the second resumes where QueryUploadStatus says.
async function resumableSession(client, prefix, scratch) {
  const key = `${prefix}session.bin`;
  const blob = randomBytes(12 * MiB + 5);
  writeFileSync(path.join(scratch, 'session.bin'), blob);
  const started = await unary(client, 'StartResumableUpload', {
    spec: { key, size: blob.length, expected: { sha256: sha256(blob) } },
  });
  check(started.upload_id.length > 0, 'StartResumableUpload: empty upload_id');
  const partSize = Number(started.part_size);
  const first = client.Upload({ deadline: deadline() }, () => {});
  first.write({ resume: { upload_id: started.upload_id, write_offset: 0 } });
  for (let pos = 0; pos < partSize + MiB; pos += MiB) first.write({ data: blob.subarray(pos, pos + MiB) });
  const query = () => unary(client, 'QueryUploadStatus', { upload_id: started.upload_id });
  let persisted = 0;
  for (let tries = 0; tries < 200 && persisted === 0; tries++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    persisted = Number((await query()).persisted_size);
  }
  first.cancel();
  checkEqual(persisted, partSize, 'QueryUploadStatus.persisted_size after one part');
  checkEqual(Number((await query()).persisted_size), partSize, 'persisted_size after the cut');
  const { response } = await uploadAfter(
    client,
    { resume: { upload_id: started.upload_id, write_offset: String(persisted) } },
    blob.subarray(persisted),
  );
  checkEqual(response.object.checksums.sha256.toString('hex'), sha256(blob).toString('hex'), 'resumed sha256');
  await expectError(query(), grpc.status.NOT_FOUND, 'QueryUploadStatus(finished session)');
  return { key, part_size: partSize, persisted, size: response.object.size };
}

// Copy the small object (keeping its metadata, then replacing it), then
// BatchDelete the copies, a missing key and a key whose if_match is stale.
async function copyAndBatchDelete(client, prefix, small) {
  const copied = await unary(client, 'Copy', {
    source_key: small.key,
    destination_key: `${prefix}copies/kept.txt`,
    if_none_match: true,
  });
  checkObject(copied.object, { ...small, key: `${prefix}copies/kept.txt` }, 'Copy(kept).object');
  const replaced = await unary(client, 'Copy', {
    source_key: small.key,
    destination_key: `${prefix}copies/replaced.bin`,
    replace_metadata: true,
    metadata: { Copied: 'yes' },
  });
  checkObject(
    replaced.object,
    { ...small, key: `${prefix}copies/replaced.bin`, contentType: 'application/octet-stream' },
    'Copy(replaced).object',
  );
  checkEqual(replaced.object.metadata.copied, 'yes', 'Copy(replaced).object.metadata.copied');
  const copyErrors = {
    missing_source: await expectError(
      unary(client, 'Copy', { source_key: `${prefix}no-such-key`, destination_key: `${prefix}x` }),
      grpc.status.NOT_FOUND,
      'Copy(missing source)',
    ),
    exists: await expectError(
      unary(client, 'Copy', {
        source_key: small.key,
        destination_key: `${prefix}copies/kept.txt`,
        if_none_match: true,
      }),
      grpc.status.FAILED_PRECONDITION,
      'Copy(if_none_match onto an existing key)',
    ),
  };
  const deleted = await unary(client, 'BatchDelete', {
    entries: [
      { key: `${prefix}copies/kept.txt`, if_match: copied.object.etag },
      { key: `${prefix}copies/missing.txt` },
      { key: `${prefix}copies/replaced.bin`, if_match: 'stale-etag' },
    ],
  });
  const results = deleted.results.map((r) => ({ key: r.key, code: r.code, message: r.message }));
  checkEqual(results.length, 3, 'BatchDelete result count');
  checkEqual(results[0].code, 0, 'BatchDelete(kept) code');
  checkEqual(results[1].code, 0, 'BatchDelete(missing) code');
  checkEqual(results[2].code, grpc.status.FAILED_PRECONDITION, 'BatchDelete(stale if_match) code');
  check(results[2].message.length > 0, 'BatchDelete(stale if_match): empty message');
  const tooMany = await expectError(
    unary(client, 'BatchDelete', { entries: Array.from({ length: 1001 }, (_, i) => ({ key: `k${i}` })) }),
    grpc.status.INVALID_ARGUMENT,
    'BatchDelete(1001 keys)',
  );
  return { kept: copied.object.key, replaced: replaced.object.key, results, errors: { ...copyErrors, too_many: tooMany } };
}

// SetTags on an object, then Stat with include_tags: the tags, the storage
// class, and a refused tag key.
async function tagsAndClass(client, key) {
  const set = await unary(client, 'SetTags', { key, tags: { team: 'node', note: 'a b' } });
  const sorted = (tags) => JSON.stringify(Object.entries(tags).sort());
  checkEqual(sorted(set.object.tags), sorted({ note: 'a b', team: 'node' }), 'SetTags.object.tags');
  const stat = await unary(client, 'Stat', { key, include_tags: true });
  checkEqual(stat.object.tags.team, 'node', 'Stat(include_tags).object.tags.team');
  checkEqual(stat.object.storage_class, 'STANDARD', 'Stat.object.storage_class');
  const plain = await unary(client, 'Stat', { key });
  checkEqual(Object.keys(plain.object.tags).length, 0, 'Stat(without include_tags).object.tags');
  const refused = await expectError(
    unary(client, 'SetTags', { key, tags: { 'aws:owner': 'node' } }),
    grpc.status.INVALID_ARGUMENT,
    'SetTags(aws: key)',
  );
  return { key, tags: stat.object.tags, storage_class: stat.object.storage_class, refused };
}

// Direct uploads by name, on a server without direct transfers: a session
// asked to be direct is a proxied one (direct false), the two direct calls on
// it are refused with FAILED_PRECONDITION (PresignUploadParts too), and it is
// cancelled.
async function directUploadCalls(client, prefix) {
  const started = await unary(client, 'StartResumableUpload', {
    spec: { key: `${prefix}direct.bin`, size: 6 * MiB },
    direct: true,
  });
  checkEqual(started.direct, false, 'StartResumableUpload(direct).direct');
  const uploadId = started.upload_id;
  const presign = await expectError(
    unary(client, 'PresignUploadPart', { upload_id: uploadId, part_number: 1, size: MiB, crc32c: 1 }),
    grpc.status.FAILED_PRECONDITION,
    'PresignUploadPart(proxied session)',
  );
  const presignMany = await expectError(
    unary(client, 'PresignUploadParts', {
      upload_id: uploadId,
      parts: [
        { part_number: 1, size: 5 * MiB, crc32c: 1 },
        { part_number: 2, size: MiB, crc32c: 2 },
      ],
    }),
    grpc.status.FAILED_PRECONDITION,
    'PresignUploadParts(proxied session)',
  );
  const complete = await expectError(
    unary(client, 'CompleteDirectUpload', { upload_id: uploadId, size: 6 * MiB, crc32c: 1 }),
    grpc.status.FAILED_PRECONDITION,
    'CompleteDirectUpload(proxied session)',
  );
  await unary(client, 'CancelResumableUpload', { upload_id: uploadId });
  return { direct: started.direct, presign, presignMany, complete };
}

main().then(
  () => process.exit(0),
  (err) => {
    const what = err instanceof Mismatch ? err.message : err.stack || String(err);
    const code = err.code !== undefined ? ` (gRPC status ${grpc.status[err.code]} ${err.code}: ${err.details})` : '';
    process.stderr.write(`node client: FAILED: ${what}${code}\n`);
    process.exit(1);
  },
);
