/** graphile-worker: tasks from tasks/, schedule from crontab; runs as the owner role. */
import { run, type Runner } from "graphile-worker";
import { resolve } from "node:path";
import type pg from "pg";
import { projectRoot } from "./config.ts";

export async function startWorker(ownerPool: pg.Pool, concurrency: number): Promise<Runner> {
  return run({
    pgPool: ownerPool,
    concurrency,
    taskDirectory: resolve(projectRoot, "tasks"),
    crontabFile: resolve(projectRoot, "crontab"),
    noHandleSignals: true,
    pollInterval: 1000,
  });
}
