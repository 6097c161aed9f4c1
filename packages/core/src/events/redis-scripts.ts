import type { Redis, Result } from 'ioredis';

/**
 * The Lua scripts of the Redis Streams transport. Each runs atomically on the server, so a
 * publish is routed to every bound queue and appended to the log all at once or not at all, and
 * a delayed retry moves back to its queue exactly once. Registered with `defineCommand` (EVALSHA,
 * falling back to EVAL when the server lost its script cache, e.g. after a restart).
 *
 * The scripts touch keys they compute from the namespace prefix (the queues a binding names):
 * fine on a single Redis server, not on Redis Cluster, which this transport does not support.
 */

/** Routing key words matched against a binding (`*` one word, `#` zero or more), as `topicMatches`. */
const TOPIC_MATCH = `
local function split(s)
  local r = {}
  local start = 1
  while true do
    local i = string.find(s, '.', start, true)
    if not i then table.insert(r, string.sub(s, start)); return r end
    table.insert(r, string.sub(s, start, i - 1))
    start = i + 1
  end
end
local function match(p, k, i, j)
  if i > #p then return j > #k end
  if p[i] == '#' then
    for n = j, #k + 1 do if match(p, k, i + 1, n) then return true end end
    return false
  end
  if j > #k then return false end
  return (p[i] == '*' or p[i] == k[j]) and match(p, k, i + 1, j + 1)
end
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * KEYS: the log stream, the bindings hash. ARGV: key prefix (`<ns>:`), log on ('1'/'0'), maxAgeMs
 * ('' = none), maxBytes ('' = none), then per message: id, routing key, headers JSON, body.
 *
 * The log's entry ids are chosen here, not by `*`: `ms-seq` with seq < 8192, so an entry's offset
 * `(ms - epoch) * 8192 + seq` is a safe integer that grows with publish order (log-redis.ts). The
 * ms is the server's clock, or the last id's when the clock went back.
 *
 * Exclusive queues whose owner stopped refreshing their binding are removed on the way.
 */
const PUBLISH = `${TOPIC_MATCH}
local logKey, bindingsKey = KEYS[1], KEYS[2]
local prefix, logOn = ARGV[1], ARGV[2] == '1'
local maxAgeMs, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = nowMs()
local queues = {}
local raw = redis.call('HGETALL', bindingsKey)
for i = 1, #raw, 2 do
  local queue = raw[i]
  local b = cjson.decode(raw[i + 1])
  local q = prefix .. 'q:' .. queue
  if b.expiresAt and b.expiresAt < now then
    redis.call('HDEL', bindingsKey, queue)
    redis.call('DEL', q, q .. ':delayed', q .. ':dlq')
  else
    local patterns = {}
    for _, p in ipairs(b.patterns) do table.insert(patterns, split(p)) end
    table.insert(queues, { q, patterns })
  end
end
local lastMs, lastSeq = 0, -1
if logOn and redis.call('EXISTS', logKey) == 1 then
  local info = redis.call('XINFO', 'STREAM', logKey)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local id = info[i + 1]
      local dash = string.find(id, '-', 1, true)
      lastMs = tonumber(string.sub(id, 1, dash - 1))
      lastSeq = tonumber(string.sub(id, dash + 1))
    end
  end
end
local routed = 0
for m = 5, #ARGV, 4 do
  local id, key, headers, body = ARGV[m], ARGV[m + 1], ARGV[m + 2], ARGV[m + 3]
  if logOn then
    if now > lastMs then lastMs, lastSeq = now, 0
    else
      lastSeq = lastSeq + 1
      if lastSeq >= 8192 then lastMs, lastSeq = lastMs + 1, 0 end
    end
    redis.call('XADD', logKey, string.format('%.0f-%d', lastMs, lastSeq), 'id', id, 'key', key, 'headers', headers, 'body', body)
  end
  local words = split(key)
  for _, q in ipairs(queues) do
    for _, p in ipairs(q[2]) do
      if match(p, words, 1, 1) then
        redis.call('XADD', q[1], '*', 'id', id, 'key', key, 'headers', headers, 'body', body)
        routed = routed + 1
        break
      end
    end
  end
end
if logOn then
  if maxAgeMs then redis.call('XTRIM', logKey, 'MINID', '~', string.format('%.0f', now - maxAgeMs)) end
  if maxBytes then
    local used = redis.call('MEMORY', 'USAGE', logKey)
    if used and used > maxBytes then
      local len = redis.call('XLEN', logKey)
      redis.call('XTRIM', logKey, 'MAXLEN', '~', math.floor(len * maxBytes / used))
    end
  end
end
return routed
`;

/**
 * KEYS: a queue's delayed set, its stream. ARGV: at most this many. Moves the retries that are
 * due back into the queue. A member is `JSON [source id, message id, key, headers]\\n<body>`.
 */
const PROMOTE = `${TOPIC_MATCH}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowMs(), 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local nl = string.find(member, '\\n', 1, true)
  local meta = cjson.decode(string.sub(member, 1, nl - 1))
  redis.call('XADD', KEYS[2], '*', 'id', meta[2], 'key', meta[3], 'headers', meta[4], 'body', string.sub(member, nl + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
`;

/**
 * KEYS: a queue's DLQ, its stream. ARGV: the dead letter's entry id, its new headers JSON.
 * Moves one dead letter back; 0 when it is gone already (another replay took it).
 */
const REPLAY = `
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entries == 0 then return 0 end
local f = entries[1][2]
local fields = {}
for i = 1, #f, 2 do fields[f[i]] = f[i + 1] end
redis.call('XADD', KEYS[2], '*', 'id', fields.id or '', 'key', fields.key or '', 'headers', ARGV[2], 'body', fields.body or '')
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
`;

declare module 'ioredis' {
  interface RedisCommander<Context> {
    tributaryPublish(logKey: string, bindingsKey: string, ...args: (string | Buffer)[]): Result<number, Context>;
    tributaryPromote(delayedKey: string, queueKey: string, limit: number): Result<number, Context>;
    tributaryReplay(dlqKey: string, queueKey: string, entryId: string, headers: string): Result<number, Context>;
  }
}

/** Register the scripts as commands of `client` (once per client). */
export function defineScripts(client: Redis): void {
  client.defineCommand('tributaryPublish', { numberOfKeys: 2, lua: PUBLISH });
  client.defineCommand('tributaryPromote', { numberOfKeys: 2, lua: PROMOTE });
  client.defineCommand('tributaryReplay', { numberOfKeys: 2, lua: REPLAY });
}
