/**
 * Preloaded (`--import`) into the audit's own server process only. The audit targets Node 24
 * (its .node-version) and calls `Promise.withResolvers` (ES2024, Node ≥ 22); this repository runs
 * on Node 20, whose V8 has no flag for it. The standard method, as the spec defines it, lets the
 * audit's code run unchanged here. Nothing of ours runs in that process.
 */
interface WithResolvers {
  withResolvers?: <T>() => { promise: Promise<T>; resolve: (value: T | PromiseLike<T>) => void; reject: (reason?: unknown) => void };
}

const promiseConstructor = Promise as unknown as WithResolvers;
if (typeof promiseConstructor.withResolvers !== 'function') {
  promiseConstructor.withResolvers = <T>() => {
    let resolve!: (value: T | PromiseLike<T>) => void;
    let reject!: (reason?: unknown) => void;
    const promise = new Promise<T>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
