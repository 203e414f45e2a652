/**
 * Phone numbers from files people typed by hand ("(202) 555-0143", "202.555.0143 x12", "+44 20 7946 0958")
 * to E.164, with libphonenumber's full metadata, so a number is checked against the real numbering
 * plan of its country, not just its length. The database checks the E.164 form again (domain e164_phone).
 */
import { isSupportedCountry, parsePhoneNumberWithError, ParseError, type CountryCode } from "libphonenumber-js/max";

export type PhoneResult =
  /** No phone given (blank). */
  | { ok: true; phone: null; extension: null }
  | { ok: true; phone: string; extension: string | null }
  | { ok: false; reason: string };

const PARSE_REASONS: Record<string, string> = {
  INVALID_COUNTRY: "has no country code and the default country is unknown",
  NOT_A_NUMBER: "is not a phone number",
  TOO_SHORT: "is too short",
  TOO_LONG: "is too long",
  INVALID_LENGTH: "has the wrong number of digits",
};

/** True when libphonenumber knows the two-letter country code (e.g. US, GB). */
export function isKnownCountry(code: string): code is CountryCode {
  return isSupportedCountry(code);
}

/**
 * The number in E.164 form (+12025550143), or why it isn't one. Numbers without a country code are
 * read as numbers of `defaultCountry`. An extension ("x12", "ext. 12") is returned separately.
 */
export function normalizePhone(raw: string | null | undefined, defaultCountry: CountryCode): PhoneResult {
  const text = (raw ?? "").trim();
  if (text === "") return { ok: true, phone: null, extension: null };
  let parsed;
  try {
    parsed = parsePhoneNumberWithError(text, { defaultCountry });
  } catch (error) {
    const code = error instanceof ParseError ? error.message : "NOT_A_NUMBER";
    const reason = code === "INVALID_COUNTRY" && /^\s*(\+|00)/.test(text) ? "has an unknown country code" : (PARSE_REASONS[code] ?? PARSE_REASONS.NOT_A_NUMBER);
    return { ok: false, reason: `Phone '${text}' ${reason}` };
  }
  if (!parsed.isValid()) {
    const where = parsed.country ?? (text.startsWith("+") ? `+${parsed.countryCallingCode}` : defaultCountry);
    return { ok: false, reason: `Phone '${text}' is not a valid ${where} number` };
  }
  return { ok: true, phone: parsed.number, extension: parsed.ext ?? null };
}
