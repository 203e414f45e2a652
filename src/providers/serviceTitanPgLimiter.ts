/**
 * ServiceTitan's rate limit kept in PostgreSQL, so every worker process counts together
 * (app_private.st_take_rate_slot / st_release_rate_slot, migration 000021): a request takes one of
 * `limit` slots before it is sent and gives it back once its answer is in; the slot is free again a
 * second later. A slot of a process that died frees itself when its hold runs out.
 */
import type pg from "pg";
import type { RequestLimiter } from "./serviceTitan.ts";

export class PgRequestLimiter implements RequestLimiter {
  readonly #pool: pg.Pool;
  readonly #key: string;
  readonly #holdMs: number;

  constructor(pool: pg.Pool, key: string, holdMs: number) {
    this.#pool = pool;
    this.#key = key;
    this.#holdMs = Math.ceil(holdMs);
  }

  async acquire(limit: number): Promise<() => void> {
    for (;;) {
      const { rows } = await this.#pool.query<{ slot: number | null; wait_ms: number }>(
        "select slot, wait_ms from app_private.st_take_rate_slot($1, $2, make_interval(secs => $3::double precision / 1000))",
        [this.#key, limit, this.#holdMs],
      );
      const slot = rows[0]?.slot ?? null;
      if (slot !== null) {
        let released = false;
        return () => {
          if (released) return;
          released = true;
          // Not awaited: the answer is in already. If this fails the slot frees itself when its hold ends.
          this.#pool.query("select app_private.st_release_rate_slot($1, $2)", [this.#key, slot]).catch(() => {});
        };
      }
      await new Promise((resolve) => setTimeout(resolve, rows[0]?.wait_ms ?? 50));
    }
  }
}

/** The limiter factory for ServiceTitanClient options: slots in this database. */
export function pgRequestLimiters(pool: pg.Pool): (key: string, holdMs: number) => RequestLimiter {
  return (key, holdMs) => new PgRequestLimiter(pool, key, holdMs);
}
