--! Previous: sha1:4fbc9032399f5bae88aa2ff5ce1758403172897c
--! Hash: sha1:eb86d0e78784e4e7e89638d3a7a3dff44c82a8f4
--! Message: A message-status callback racing the worker that records the provider id is applied, not answered 404

-- Migration 000014: a message-status callback that races the worker recording the provider id is
-- applied, not answered 404 (found by CI under load: the callback waited for the row lock of
-- record_message_sent, and the recheck of "message_sid is null" then skipped the row).

create or replace function app_private.apply_message_status(message_id uuid, message_sid text, status text,
    error_code integer default null, error_message text default null) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_status text := case apply_message_status.status
    when 'accepted' then 'sent' when 'scheduled' then 'sent' when 'queued' then 'sent' when 'sending' then 'sent'
    when 'sent' then 'sent' when 'delivered' then 'delivered' when 'read' then 'delivered'
    when 'undelivered' then 'undelivered' when 'failed' then 'failed' when 'canceled' then 'canceled' end;
  v_id uuid;
begin
  if v_status is null then
    raise exception 'Unknown MessageStatus %', coalesce(pg_catalog.quote_literal(pg_catalog.left(apply_message_status.status, 40)), 'nothing')
      using errcode = '22023';
  end if;
  if apply_message_status.message_sid is null or apply_message_status.message_sid !~ '^(SM|MM)[0-9a-fA-F]{32}$' then
    raise exception 'MessageSid must be SM or MM followed by 32 hexadecimal digits' using errcode = '22023';
  end if;
  select m.id into v_id from app_public.messages m
  where m.message_sid = apply_message_status.message_sid and m.direction = 'outbound' for update;
  if v_id is null and apply_message_status.message_id is not null then
    -- The report came before the worker recorded the provider id: the callback URL names our message.
    -- The worker may be recording it right now: this waits for its row lock, and then finds the row with
    -- that very id recorded (without "or m.message_sid = ..." the recheck after the wait missed it: 404).
    select m.id into v_id from app_public.messages m
    where m.id = apply_message_status.message_id and m.direction = 'outbound'
      and (m.message_sid is null or m.message_sid = apply_message_status.message_sid)
    for update;
  end if;
  if v_id is null then
    raise exception 'No outbound message %', apply_message_status.message_sid using errcode = 'P0002';
  end if;
  update app_public.messages m
  set message_sid = coalesce(m.message_sid, apply_message_status.message_sid),
      provider_status = apply_message_status.status,
      status = v_status,
      sent_at = coalesce(m.sent_at, now()),
      delivered_at = case when v_status = 'delivered' then now() else m.delivered_at end,
      failed_at = case when v_status in ('undelivered', 'failed', 'canceled') then now() else m.failed_at end,
      error_code = coalesce(apply_message_status.error_code, m.error_code),
      error_message = coalesce(apply_message_status.error_message, m.error_message)
  where m.id = v_id
    and app_hidden.message_status_rank(m.status) < 3
    and app_hidden.message_status_rank(v_status) > app_hidden.message_status_rank(m.status);
  return found;
end;
$$;
comment on function app_private.apply_message_status(uuid, text, text, integer, text) is $$The message-status webhook: maps the provider status (accepted, queued, sending, sent → sent; delivered, read → delivered; undelivered; failed; canceled) and applies it only when it moves the message forward; a final status (delivered, undelivered, failed, canceled) never changes, so a late "sent" never overwrites "delivered". Returns whether anything changed. Errors: 22023 an unknown status or malformed MessageSid; P0002 no such outbound message.$$;
