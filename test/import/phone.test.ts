/** Phone numbers as people type them, to E.164 (libphonenumber, full metadata), or a reason. */
import { describe, expect, it } from "vitest";
import { isKnownCountry, normalizePhone } from "../../src/import/phone.ts";

describe("normalizePhone", () => {
  it.each([
    ["(202) 555-0143", "US", "+12025550143"],
    ["202.555.0143", "US", "+12025550143"],
    ["1-202-555-0143", "US", "+12025550143"],
    ["+1 202 555 0143", "GB", "+12025550143"],
    ["020 7946 0958", "GB", "+442079460958"],
    ["+44 20 7946 0958", "US", "+442079460958"],
    ["0044 20 7946 0958", "GB", "+442079460958"],
  ] as const)("%s (default %s) -> %s", (raw, country, e164) => {
    expect(normalizePhone(raw, country)).toEqual({ ok: true, phone: e164, extension: null });
  });

  it("keeps an extension apart", () => {
    expect(normalizePhone("202-555-0143 ext. 12", "US")).toEqual({ ok: true, phone: "+12025550143", extension: "12" });
  });

  it("blank is no phone, not an error", () => {
    expect(normalizePhone("   ", "US")).toEqual({ ok: true, phone: null, extension: null });
    expect(normalizePhone(null, "US")).toEqual({ ok: true, phone: null, extension: null });
  });

  it.each([
    ["abc", "US", "Phone 'abc' is not a phone number"],
    ["555-0143", "US", "Phone '555-0143' is not a valid US number"],
    ["020 7946 0958", "US", "Phone '020 7946 0958' is not a valid US number"],
    ["+1 555 555 5555", "US", "Phone '+1 555 555 5555' is not a valid +1 number"],
    ["+999 123456", "US", "Phone '+999 123456' has an unknown country code"],
    ["2", "US", "Phone '2' is too short"],
  ] as const)("rejects %s (default %s) with a reason", (raw, country, reason) => {
    expect(normalizePhone(raw, country)).toEqual({ ok: false, reason });
  });

  it("knows which country codes it can read numbers for", () => {
    expect(isKnownCountry("US")).toBe(true);
    expect(isKnownCountry("GB")).toBe(true);
    expect(isKnownCountry("ZZ")).toBe(false);
    expect(isKnownCountry("us")).toBe(false);
  });
});
