/**
 * Which workers run the crontab: the application's worker does (every scheduled task is registered
 * in graphile_worker._private_known_crontabs when it starts); a worker limited to some tasks, as the
 * tests start them, schedules nothing — graphile-worker reads ./crontab unless told otherwise.
 */
import type { Runner } from "graphile-worker";
import { parseCrontab } from "graphile-worker";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { projectRoot } from "../../src/config.ts";
import { startWorker } from "../../src/worker/start.ts";
import { ownerPool, rootPool, useOwnDatabase, waitFor } from "../helpers.ts";

useOwnDatabase("worker_crontab");

let runner: Runner | null = null;
afterEach(async () => {
  await runner?.stop();
  runner = null;
});

async function knownCrontabs(): Promise<string[]> {
  const { rows } = await rootPool().query<{ identifier: string }>("select identifier from graphile_worker._private_known_crontabs order by identifier");
  return rows.map((r) => r.identifier);
}

describe("the crontab", () => {
  it("a worker limited to some tasks registers and schedules no crontab entry", async () => {
    runner = await startWorker(ownerPool(), 1, { only: ["tenant__initialize"] });
    // Give the cron loop the time it takes the full worker to register (see the next test).
    await new Promise((r) => setTimeout(r, 1500));
    expect(await knownCrontabs()).toEqual([]);
  });

  it("the application's worker registers every entry of ./crontab", async () => {
    const expected = parseCrontab(readFileSync(resolve(projectRoot, "crontab"), "utf8"))
      .map((item) => item.identifier)
      .sort();
    expect(expected).toContain("servicetitan_incremental");
    runner = await startWorker(ownerPool(), 1);
    await waitFor("the crontab to be registered", async () => (await knownCrontabs()).length === expected.length, 15_000);
    expect(await knownCrontabs()).toEqual(expected);
  });
});
