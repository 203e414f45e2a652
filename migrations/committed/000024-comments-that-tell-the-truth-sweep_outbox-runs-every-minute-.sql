--! Previous: sha1:5718e9ca7f1d9c869d0c8b9d6b88590449233f7f
--! Hash: sha1:08c5d5e13e175f7006516778cf472f36c86e11e8
--! Message: Comments that tell the truth: sweep_outbox runs every minute from the crontab (not also at worker start); only the ServiceTitan client secret is encrypted, the app key is kept as given

-- Comments that tell the truth (they are the GraphQL documentation):
-- sweep_outbox runs every minute from the crontab, not also at worker start;
--! Included messaging/sweep_outbox.sql
create or replace function app_private.sweep_outbox(grace interval default interval '10 minutes', out requeued integer, out to_reconcile integer)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_message record;
begin
  requeued := 0;
  to_reconcile := 0;
  for v_message in
    select m.id from app_public.messages m
    where m.status = 'queued' and m.scheduled_for <= app_hidden.clock_now(m.tenant_id) - sweep_outbox.grace
    order by m.scheduled_for
    limit 5000
  loop
    perform app_private.enqueue_sms_send(v_message.id);
    requeued := requeued + 1;
  end loop;
  for v_message in
    select m.id from app_public.messages m
    where m.status = 'sending' and m.sending_at <= now() - sweep_outbox.grace
    order by m.sending_at
    limit 5000
  loop
    perform app_private.add_job('sms__reconcile', pg_catalog.json_build_object('message_id', v_message.id),
      job_key => 'sms_reconcile:' || v_message.id, max_attempts => 10);
    to_reconcile := to_reconcile + 1;
  end loop;
end;
$$;

comment on function app_private.sweep_outbox(interval) is $$Finds outbox rows a stopped worker left behind (run every minute by the sms__sweep cron task): queued messages overdue by more than grace get their sms__send job again (a duplicate job is harmless: only one claim succeeds); messages in sending for more than grace get an sms__reconcile job, which asks the provider before anything is sent again. The grace must exceed the provider timeout, so that a send still under way is not taken for a lost one.$$;
--! EndIncluded messaging/sweep_outbox.sql
-- only the ServiceTitan client secret is encrypted; the app key is kept as given (both in app_private).
comment on table app_public.service_titan_connections is $$A tenant’s connection to ServiceTitan (one per tenant): who we are at ServiceTitan and whether the last test worked. The client secret (encrypted by the application) and the app key are kept in app_private and never shown. Saved and tested with the saveServiceTitanConnection mutation (owners and admins); managers and up can read it.$$;
