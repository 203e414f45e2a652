/** A closed-loop load: `concurrency` clients send requests back to back for `seconds`. */
import { performance } from "node:perf_hooks";

export interface LoadResult {
  /** Requests completed per second. */
  rps: number;
  /** Each request's latency in ms. */
  latencies: number[];
}

export async function runLoad(seconds: number, concurrency: number, request: () => Promise<unknown>): Promise<LoadResult> {
  const latencies: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        await request();
        latencies.push(performance.now() - t);
      }
    }),
  );
  return { rps: latencies.length / ((performance.now() - start) / 1000), latencies };
}
