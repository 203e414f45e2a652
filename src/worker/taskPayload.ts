/**
 * Payload checks shared by the graphile-worker tasks: a job's payload is JSON written by SQL, so each
 * task checks the one id it needs before touching the database.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

/** The uuid in payload[field], or an error naming the task and the payload it needs. */
export function uuidFromPayload(payload: unknown, field: string, task: string): string {
  const value = (payload as Record<string, unknown> | null)?.[field];
  if (!isUuid(value)) throw new Error(`${task} needs a payload {${field}: uuid}`);
  return value;
}
