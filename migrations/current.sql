-- Issue 14, the rest of the account lifecycle: password reset by an emailed single-use token, change
-- of password (asks the current one), change of email address (the new one confirmed by a token
-- sent to it), listing and ending one's own sessions, and role changes by owners and admins (the
-- last owner is never demoted or removed). Every token is kept as its SHA-256 only.

create table if not exists app_private.password_reset_tokens (
  user_id uuid primary key,
  email public.citext not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint password_reset_tokens_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint password_reset_tokens_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32)
);
create unique index if not exists password_reset_tokens_token_hash_idx on app_private.password_reset_tokens (token_hash);
comment on table app_private.password_reset_tokens is 'The current password reset token of each user who asked for one, as its SHA-256 only (the token itself is only in the email). Deleted when used, when the password is changed, or when the address changes; replaced when a new one is sent.';
comment on column app_private.password_reset_tokens.user_id is 'The user.';
comment on column app_private.password_reset_tokens.email is 'The address the token was sent to (the token stops working if the account address changes).';
comment on column app_private.password_reset_tokens.token_hash is 'SHA-256 of the token (sbr_ and 64 hex digits, 256 random bits).';
comment on column app_private.password_reset_tokens.expires_at is 'When the token stops working (1 hour after it was sent).';
comment on column app_private.password_reset_tokens.created_at is 'When the token was issued (at most one a minute per user).';
alter table app_private.password_reset_tokens enable row level security;
alter table app_private.password_reset_tokens force row level security;
drop policy if exists owner_all on app_private.password_reset_tokens;
create policy owner_all on app_private.password_reset_tokens for all to :DATABASE_OWNER using (true) with check (true);

create table if not exists app_private.email_change_requests (
  user_id uuid primary key,
  old_email public.citext not null,
  new_email public.citext not null,
  token_hash bytea not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint email_change_requests_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint email_change_requests_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32),
  constraint email_change_requests_new_email_must_differ_from_the_old check (new_email <> old_email)
);
create unique index if not exists email_change_requests_token_hash_idx on app_private.email_change_requests (token_hash);
comment on table app_private.email_change_requests is 'The pending change of login address of each user who asked for one, with the SHA-256 of the token sent to the new address. Deleted when confirmed or when the password is reset; replaced by a new request.';
comment on column app_private.email_change_requests.user_id is 'The user.';
comment on column app_private.email_change_requests.old_email is 'The address when the change was asked for (the token stops working if it changes meanwhile).';
comment on column app_private.email_change_requests.new_email is 'The address to change to; not checked against other accounts until it is confirmed (the answer would tell whether an account uses it).';
comment on column app_private.email_change_requests.token_hash is 'SHA-256 of the token (sbe_ and 64 hex digits, 256 random bits).';
comment on column app_private.email_change_requests.expires_at is 'When the token stops working (24 hours after it was sent).';
comment on column app_private.email_change_requests.created_at is 'When the change was asked for (at most one a minute per user).';
alter table app_private.email_change_requests enable row level security;
alter table app_private.email_change_requests force row level security;
drop policy if exists owner_all on app_private.email_change_requests;
create policy owner_all on app_private.email_change_requests for all to :DATABASE_OWNER using (true) with check (true);

-- Revoking the keys a user created (reset of an unproved account) looks them up by creator.
create index if not exists api_keys_created_by_idx on app_public.api_keys (created_by) where revoked_at is null;
comment on index app_public.api_keys_created_by_idx is 'The active keys a user created, in any tenant: reset_password revokes them when the account had never proved its address.';

comment on table app_public.memberships is 'Who belongs to which tenant, with which role. Changed only through register (the owner of a new business), accept_invitation, change_member_role and remove_member.';
comment on table app_public.user_sessions is 'Your login sessions (isCurrent marks the one making the request). The signed token carries the session id; a session stops working when it expires or is revoked: logout, revokeSession, revokeOtherSessions, a password change (the others) or reset (all).';
comment on column app_public.user_sessions.revoked_at is 'When the session was ended (logout, revokeSession, revokeOtherSessions, a password change or reset); null while active.';
comment on column app_public.api_keys.created_by is 'The member who created the key; null when created with another API key or when the creator has left. Removing the member, or demoting them below the key''s role, revokes the key.';

--!include identity/send_account_notice.sql
--!include identity/issue_password_reset_token.sql
--!include identity/request_password_reset.sql
--!include identity/reset_password.sql
--!include identity/require_current_password.sql
--!include identity/change_password.sql
--!include identity/request_email_change.sql
--!include identity/confirm_email_change.sql
--!include identity/revoke_session.sql
--!include identity/revoke_other_sessions.sql
--!include identity/user_sessions_is_current.sql
--!include identity/change_member_role.sql
--!include identity/remove_member.sql
