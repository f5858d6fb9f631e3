// The demo publisher's own script: it renders the meter and the paywall from Pulse's decision.
// The tracker already sets data-pulse-paywall / data-pulse-remaining on <html> (the CSS uses
// them); this adds the text and the log-in buttons.
pulse('onDecision', function (decision) {
  document.documentElement.setAttribute('data-pulse-reason', decision.reason);
  var meter = document.querySelector('.meter');
  if (meter && decision.remaining !== undefined) {
    var n = decision.remaining;
    meter.textContent = n === 1 ? '1 free article left' : n + ' free articles left';
  }
});
document.addEventListener('click', function (e) {
  var action = e.target.getAttribute && e.target.getAttribute('data-action');
  if (action === 'login') {
    pulse('identify', 'demo-subscriber', { subscriber: true });
  } else if (action === 'logout') {
    pulse('reset');
    location.reload();
  }
});
