/**
 * Which errors reach API clients. PostGraphile masks everything that is not a SafeError; we let
 * through the documented SQLSTATEs raised by our functions and constraint violations (with the
 * constraint's sentence-like name turned into the message). Anything else stays masked and logged.
 */
import { defaultMaskError } from "postgraphile/grafserv";
import { GraphQLError, type GraphQLFormattedError } from "postgraphile/graphql";

/** SQLSTATEs whose messages are written for people (see README, "Errors"). */
const EXPOSED_CODES = new Set([
  "22023", // invalid input
  "23505", // duplicate
  "23503", // reference to something that does not exist
  "23502", // required value missing
  "23514", // check constraint
  "22P02", // malformed value (e.g. not a uuid)
  "22001", // value too long
  "22003", // number out of range
  "22007", // invalid date/time
  "22008", // date/time out of range
  "28P01", // wrong credentials
  "28000", // not logged in
  "42501", // not allowed
  "P0002", // not found
  "40001", // serialization failure: retry
  "40P01", // deadlock: this transaction was chosen to roll back; retry
  "57014", // statement timeout
  "55000", // not in a state that allows it (e.g. a ServiceTitan connection that is disabled or failed its test)
  "SB001", // not sent: the number is on the do-not-contact list
  "SB002", // not sent: no current consent to marketing texts from the number
]);

interface PgError extends Error {
  code?: string;
  constraint?: string;
  table?: string;
  column?: string;
  detail?: string;
}

/** tenants_business_name_must_not_be_blank -> "Tenants business name must not be blank." */
export function constraintMessage(constraint: string): string {
  const words = constraint.replace(/_/g, " ").trim();
  return `${words.charAt(0).toUpperCase()}${words.slice(1)}.`;
}

export function maskError(error: GraphQLError): GraphQLError | GraphQLFormattedError {
  const original = error.originalError as PgError | undefined;
  const code = original?.code;
  if (original && typeof code === "string" && EXPOSED_CODES.has(code)) {
    const sentenceLike = original.constraint && /_(must|cannot|can_not|should|needs?|is|are)_/.test(original.constraint);
    const message =
      (code === "23514" || code === "23505" || code === "23503") && sentenceLike ? constraintMessage(original.constraint!) : original.message;
    return new GraphQLError(message, {
      nodes: error.nodes,
      source: error.source,
      positions: error.positions,
      path: error.path,
      originalError: original,
      extensions: { code, ...(original.constraint ? { constraint: original.constraint } : {}) },
    });
  }
  return defaultMaskError(error);
}
