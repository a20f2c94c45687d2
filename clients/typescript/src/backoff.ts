/** Retry delays: exponential with full jitter (a random delay up to the capped exponential). */
export interface BackoffOptions {
  /** First delay cap in ms (default 500). */
  baseMs?: number;
  /** Largest delay in ms (default 30,000). */
  maxMs?: number;
  /** Random source in [0, 1) (default Math.random; tests pass a seeded one). */
  random?: () => number;
}

export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? 500;
  const max = options.maxMs ?? 30_000;
  const random = options.random ?? Math.random;
  const cap = Math.min(max, base * 2 ** Math.max(0, attempt));
  return Math.floor(random() * cap);
}

/** A small seeded PRNG (mulberry32) for reproducible jitter and tests. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });
