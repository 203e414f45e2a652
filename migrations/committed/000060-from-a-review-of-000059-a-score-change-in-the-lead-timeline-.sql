--! Previous: sha1:fa70ea518d665c259bc5fede3bef0fbc2d284a1f
--! Hash: sha1:645feaffa25dc74009379093204510cc4f3343e7
--! Message: From a review of 000059: a score change in the lead timeline looks its previous score up once, not four times (full reads and deep pages were 1.7 times slower than before 000059), and ties between texts, emails or enrollments at the same time are broken by their ids, so the order is total

--! Included crm/lead_timeline.sql
create or replace function app_public.lead_timeline(lead_id uuid) returns setof app_public.lead_timeline_event
  language sql stable
  -- SECURITY INVOKER: row-level security decides what the caller sees.
  -- No SET options (every name below is schema-qualified), so that PostgreSQL inlines it into the
  -- query of the API instead of running it apart and storing all its rows first.
as $$
  -- One branch per source; a new source (messages, calls, routing decisions) is one more UNION ALL
  -- branch with the same columns. source_order, seq and then uid (the id of a text, an email or an
  -- enrollment, whose seq can repeat) only break ties between equal times, so the order is total
  -- and the pages of the API (an offset under its cursors) neither repeat nor skip an event.
  -- The lead and its tenant are named once, on the union as a whole, not inside each branch: so
  -- PostgreSQL gives each source the conditions tenant_id = … and lead_id = … as constants, and the
  -- index of each source led by (tenant_id, lead_id, time) returns that lead's rows in time order.
  -- The sources are then merged in time order (Merge Append) and a page stops after its rows: the
  -- first 50 events of a lead with 40,000 read about 50 rows of each source, not 40,000. This holds
  -- only while each branch reads one table with no WHERE of its own: PostgreSQL keeps any other
  -- branch apart, planned without the order. So what a branch leaves out is said by its column
  -- shown, tested on the union with the lead, and the previous score is a subquery, not a window.
  -- Naming the tenant makes the index apply whoever the caller is: row-level security adds the same
  -- condition for a request, but the owner role of the worker has none.
  select ev.occurred_at, ev.event_type,
    -- A score change is told from its details here: PostgreSQL would copy the subquery of the
    -- previous score into every expression of its branch that used it (four lookups per score).
    case when ev.event_type = 'score_changed' then
      case
        when ev.details ->> 'previous_score' is null then 'Score set to ' || (ev.details ->> 'score')
        when ev.details -> 'previous_score' = ev.details -> 'score' then 'Score factors updated (score stays ' || (ev.details ->> 'score') || ')'
        else 'Score changed from ' || (ev.details ->> 'previous_score') || ' to ' || (ev.details ->> 'score')
      end
    else ev.summary end,
    ev.details, ev.actor_user_id
  from (
    -- Audit log: creation, field changes, deletion and restoration. Status, score and owner
    -- changes have their own, richer branches below.
    select a.tenant_id, a.lead_id,
      a.field_name not in ('status', 'lead_score', 'lead_score_factors', 'owner_user_id') as shown,
      a.changed_at as occurred_at, 1 as source_order, a.id as seq, null::uuid as uid,
      case
        when a.field_name = '*created*' then 'created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'restored'
        else 'field_changed'
      end as event_type,
      case
        when a.field_name = '*created*' then 'Lead created'
        when a.field_name = '*deleted*' or (a.field_name = 'deleted_at' and a.new_value is not null) then 'Lead deleted'
        when a.field_name = '*restored*' or a.field_name = 'deleted_at' then 'Lead restored'
        when a.old_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' set to ' || app_hidden.lead_timeline_value(a.new_value)
        when a.new_value is null then
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' cleared (was ' || app_hidden.lead_timeline_value(a.old_value) || ')'
        else
          pg_catalog.initcap(pg_catalog.left(pg_catalog.replace(a.field_name, '_', ' '), 1))
          || pg_catalog.substr(pg_catalog.replace(a.field_name, '_', ' '), 2)
          || ' changed from ' || app_hidden.lead_timeline_value(a.old_value)
          || ' to ' || app_hidden.lead_timeline_value(a.new_value)
      end
      || case when a.change_source <> 'manual' then ' (' || a.change_source || ')' else '' end as summary,
      pg_catalog.jsonb_build_object('field', a.field_name, 'old_value', a.old_value, 'new_value', a.new_value,
        'change_source', a.change_source, 'api_key_id', a.changed_by_api_key_id) as details,
      a.changed_by_user_id as actor_user_id
    from app_public.lead_audit_log a

    union all

    select s.tenant_id, s.lead_id, true, s.changed_at, 2, s.id, null::uuid,
      'status_changed',
      case when s.from_status is null then 'Status set to ' || s.to_status
           else 'Status changed from ' || s.from_status || ' to ' || s.to_status end
      || case when s.trigger_type <> 'manual' then ' (' || s.trigger_type || ')' else '' end,
      pg_catalog.jsonb_build_object('from_status', s.from_status, 'to_status', s.to_status, 'trigger_type', s.trigger_type),
      s.changed_by_user_id
    from app_public.lead_status_history s

    union all

    select sc.tenant_id, sc.lead_id, true, sc.calculated_at, 3, sc.id, null::uuid,
      'score_changed',
      null::text,  -- told from the details, above
      pg_catalog.jsonb_build_object('score', sc.score, 'previous_score', sc.previous_score, 'factors', sc.factors),
      null::uuid
    from (
      -- The score before: the lead's previous calculation in (calculated_at, id) order, found
      -- through the same index for the rows of the page only.
      select h.*,
        (select p.score from app_public.lead_score_history p
         where p.tenant_id = h.tenant_id and p.lead_id = h.lead_id
           and (p.calculated_at, p.id) < (h.calculated_at, h.id)
         order by p.calculated_at desc, p.id desc limit 1) as previous_score
      from app_public.lead_score_history h
    ) sc

    union all

    select g.tenant_id, g.lead_id, true, g.assigned_at, 4, g.id, null::uuid,
      'assigned',
      case
        when g.from_user_id is null then 'Assigned to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
        when g.to_user_id is null then 'Unassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
        else 'Reassigned from ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.from_user_id)
          || ' to ' || app_hidden.lead_timeline_member_name(g.tenant_id, g.to_user_id)
      end
      || case when g.strategy <> 'manual' then ' (' || pg_catalog.replace(g.strategy, '_', ' ') || ')' else '' end
      || coalesce(': ' || g.reason, ''),
      pg_catalog.jsonb_build_object('from_user_id', g.from_user_id, 'to_user_id', g.to_user_id,
        'strategy', g.strategy, 'reason', g.reason),
      g.assigned_by_user_id
    from app_public.lead_assignments g

    union all

    -- Texts to and from the lead.
    select m.tenant_id, m.lead_id, true, coalesce(m.sent_at, m.created_at), 5, 0::bigint, m.id,
      case when m.direction = 'inbound' then 'sms_received' else 'sms_sent' end,
      case when m.direction = 'inbound' then 'Text received: '
           else 'Text ' || case m.status when 'queued' then 'queued' when 'sending' then 'sending' when 'canceled' then 'canceled'
                                         when 'failed' then 'failed' when 'undelivered' then 'undelivered' else 'sent' end
                || case when m.purpose in ('marketing', 'nurture', 'notification', 'auto_response') then ' (' || pg_catalog.replace(m.purpose, '_', ' ') || ')' else '' end
                || ': ' end
      || pg_catalog.left(m.body, 80) || case when pg_catalog.length(m.body) > 80 then '…' else '' end,
      pg_catalog.jsonb_build_object('message_id', m.id, 'direction', m.direction, 'status', m.status, 'purpose', m.purpose,
        'sender', m.sender, 'nurture_enrollment_id', m.nurture_enrollment_id, 'nurture_step', m.nurture_step),
      null::uuid
    from app_public.messages m

    union all

    -- Emails to the lead (not those to a user about the lead).
    select em.tenant_id, em.lead_id, em.user_id is null, coalesce(em.sent_at, em.created_at), 6, 0::bigint, em.id,
      'email_sent',
      'Email ' || case em.status when 'sent' then 'sent' else em.status end
      || case when em.purpose <> 'transactional' then ' (' || em.purpose || ')' else '' end || ': ' || em.subject,
      pg_catalog.jsonb_build_object('email_message_id', em.id, 'status', em.status, 'purpose', em.purpose,
        'nurture_enrollment_id', em.nurture_enrollment_id, 'nurture_step', em.nurture_step),
      null::uuid
    from app_public.email_messages em

    union all

    -- Nurture: enrolled, each step, completed or stopped (times on the clock of the tenant).
    select e.tenant_id, e.lead_id, true, x.occurred_at, 7, x.seq, e.id, x.event_type, x.summary, x.details, x.actor_user_id
    from app_public.lead_sequence_enrollments e
    join app_public.nurture_sequences s on s.tenant_id = e.tenant_id and s.id = e.sequence_id
    cross join lateral (
      select e.enrolled_at as occurred_at, 0::bigint as seq, 'nurture_enrolled' as event_type,
        'Enrolled in nurture sequence "' || s.name || '"' || case when e.enrolled_via <> 'manual' then ' (' || pg_catalog.replace(e.enrolled_via, '_', ' ') || ')' else '' end as summary,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'version', e.version, 'enrolled_via', e.enrolled_via) as details,
        e.enrolled_by_user_id as actor_user_id
      union all
      select e.completed_at, 1000000::bigint, 'nurture_completed', 'Completed nurture sequence "' || s.name || '"',
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id), null::uuid
      where e.status = 'completed'
      union all
      select e.stopped_at, 1000000::bigint, 'nurture_stopped',
        'Nurture sequence "' || s.name || '" stopped: ' || pg_catalog.replace(e.stop_reason, '_', ' '),
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'sequence_id', s.id, 'stop_reason', e.stop_reason, 'after_step', e.current_step), null::uuid
      where e.status = 'stopped'
      union all
      select r.ran_at, r.step_number::bigint, 'nurture_step',
        'Nurture "' || s.name || '" step ' || r.step_number || ' (' || r.channel || ') '
        || case when r.outcome = 'skipped' then 'skipped: ' || pg_catalog.replace(r.skip_reason, '_', ' ') else 'queued' end,
        pg_catalog.jsonb_build_object('enrollment_id', e.id, 'step_number', r.step_number, 'channel', r.channel, 'outcome', r.outcome,
          'skip_reason', r.skip_reason, 'message_id', r.message_id, 'email_message_id', r.email_message_id), null::uuid
      from app_public.nurture_step_runs r
      where r.tenant_id = e.tenant_id and r.enrollment_id = e.id
    ) x
  ) ev
  where ev.tenant_id = (select l.tenant_id from app_public.leads l where l.id = lead_timeline.lead_id)
    and ev.lead_id = lead_timeline.lead_id
    and ev.shown
  order by ev.occurred_at, ev.source_order, ev.seq, ev.uid;
$$;

comment on function app_public.lead_timeline(uuid) is $$Everything that happened to a lead, oldest first: creation, field changes, status, score, owner changes, deletion and restoration, texts sent and received, emails sent, and nurture enrollments with each step, completion or stop. Row-level security applies: you see the timeline of leads of your current tenant.$$;

grant execute on function app_public.lead_timeline(uuid) to :DATABASE_VISITOR;
--! EndIncluded crm/lead_timeline.sql
