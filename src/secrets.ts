/**
 * Secrets at rest (provider credentials such as a ServiceTitan client secret): AES-256-GCM with
 * SECRETS_KEY, done here so that the key never reaches the database or its logs. A box is
 * version byte (1) · 12-byte IV · 16-byte tag · ciphertext; keyFingerprint names the key a box was
 * made with, so a changed key is reported as such instead of failing as "bad data".
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

const VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

export class SecretsKeyError extends Error {
  override name = "SecretsKeyError";
}

/** Parses SECRETS_KEY: 32 bytes as base64 (44 characters) or hex (64 characters). */
export function parseSecretsKey(raw: string): Buffer {
  const text = raw.trim();
  const key = /^[0-9a-f]{64}$/i.test(text) ? Buffer.from(text, "hex") : Buffer.from(text, "base64");
  if (key.length !== 32) {
    throw new SecretsKeyError(
      "SECRETS_KEY must be 32 random bytes, as base64 (e.g. `openssl rand -base64 32`) or 64 hex digits.",
    );
  }
  return key;
}

/** First 16 hex digits of SHA-256 of the key: safe to store next to what it encrypted. */
export function keyFingerprint(key: Buffer): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 16);
}

export function encryptSecret(key: Buffer, plaintext: string): Buffer {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), iv, cipher.getAuthTag(), body]);
}

/** Throws SecretsKeyError when the box was made with another key (fingerprint given) or was altered. */
export function decryptSecret(key: Buffer, box: Buffer, fingerprint?: string): string {
  if (fingerprint !== undefined && fingerprint !== keyFingerprint(key)) {
    throw new SecretsKeyError(
      `This secret was encrypted with another SECRETS_KEY (fingerprint ${fingerprint}, the current key's is ${keyFingerprint(key)}): save the credentials again.`,
    );
  }
  if (box.length <= 1 + IV_BYTES + TAG_BYTES || box[0] !== VERSION) throw new SecretsKeyError("The stored secret is not in a format this version reads.");
  const iv = box.subarray(1, 1 + IV_BYTES);
  const tag = box.subarray(1 + IV_BYTES, 1 + IV_BYTES + TAG_BYTES);
  const decipher = createDecipheriv("aes-256-gcm", key, iv);
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(box.subarray(1 + IV_BYTES + TAG_BYTES)), decipher.final()]).toString("utf8");
  } catch {
    throw new SecretsKeyError("The stored secret could not be decrypted (altered, or encrypted with another SECRETS_KEY).");
  }
}
